"""Sharding over processes, resumable part files and their deterministic merge."""

from __future__ import annotations

import json

import pytest

from retinaface.outputs.records import ResumableJsonLines, claim_results_folder
from retinaface.utils.distributed import Shard, current_shard
from retinaface.errors import InputError


def test_shards_cover_every_item_once():
    items = [f"img{i}" for i in range(11)]
    shares = [Shard(rank=r, world_size=3).select(items) for r in range(3)]
    assert shares[0] == ["img0", "img3", "img6", "img9"]
    assert sorted(sum(shares, [])) == sorted(items)


def test_current_shard_reads_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_shard() == Shard(rank=1, world_size=2, local_rank=1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InputError, match="not within"):
        current_shard()


def test_parts_merge_in_input_order_and_resume(tmp_path):
    final = tmp_path / "faces.jsonl"
    order = [f"p{i}" for i in range(5)]
    writers = [ResumableJsonLines(final, Shard(rank=r, world_size=2)) for r in range(2)]
    for rank, writer in enumerate(writers):
        for key in Shard(rank=rank, world_size=2).select(order)[:2]:  # p0 p2 / p1 p3 done, p4 not
            writer.write({"source": key, "faces": []})
        writer.close_part()
    assert writers[0].done() == {"p0", "p1", "p2", "p3"}
    # an interruption mid-record leaves a cut line: that input is redone, the rest kept
    with open(writers[1].parts_dir / "rank1.jsonl", "a") as handle:
        handle.write('{"source": "p4", "fa')
    assert "p4" not in writers[0].done()
    rerun = ResumableJsonLines(final, Shard())
    rerun.write({"source": "p4", "faces": [1]})
    assert rerun.merge(order) == 5
    lines = final.read_text().splitlines()
    assert [json.loads(line)["source"] for line in lines] == order
    assert not rerun.parts_dir.exists()
    # the final file is an output, never read back: a rerun after completion has nothing to resume (its
    # settings went with the parts), and a merge without parts would write an empty file
    again = ResumableJsonLines(final, Shard())
    assert again.done() == set() and not again.holds_records()


def test_results_are_reused_only_with_the_settings_that_made_them(tmp_path):
    """The one folder-resume rule: settings recorded beside the results, a resume with other settings or over
    results of unknown origin refused in one sentence naming what differs and what to do."""
    parts = tmp_path / "faces.jsonl.parts"
    claim = lambda settings, **kw: claim_results_folder(  # noqa: E731
        parts, settings, name="the parts", what="records", otherwise="start over", **kw)
    claim({"--flip": False, "--scales": (1.0,)}, reuse=False, holds_results=False)
    assert json.loads((parts / "settings.json").read_text()) == {"--flip": False, "--scales": [1.0]}
    claim({"--flip": False, "--scales": (1.0,)}, reuse=True, holds_results=True)  # the same settings resume
    with pytest.raises(InputError) as refused:
        claim({"--flip": True, "--scales": (1.0,)}, reuse=True, holds_results=True)
    assert str(refused.value) == (
        f"the parts holds records made with other settings ({parts / 'settings.json'}: --flip=false there, --flip=true now); start over"
    )
    claim({"--flip": True}, reuse=False, holds_results=True)  # a fresh run takes the folder over
    (parts / "settings.json").unlink()
    claim({"--flip": True}, reuse=True, holds_results=False)  # nothing to reuse: nothing to check, settings recorded
    assert json.loads((parts / "settings.json").read_text()) == {"--flip": True}
    (parts / "settings.json").unlink()
    with pytest.raises(InputError, match="the parts holds records of unknown origin \\(no settings.json\\); start over"):
        claim({"--flip": True}, reuse=True, holds_results=True)


def test_foreign_file_among_the_part_files_is_refused(tmp_path):
    final = tmp_path / "faces.jsonl"
    (tmp_path / "faces.jsonl.parts").mkdir()
    (tmp_path / "faces.jsonl.parts" / "rank0.jsonl").write_text("not json\n")
    with pytest.raises(InputError, match="rank0.jsonl is not a JSON Lines file"):
        ResumableJsonLines(final, Shard()).done()
