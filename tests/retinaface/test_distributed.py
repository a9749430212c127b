"""Sharding over processes, resumable part files and their deterministic merge."""

from __future__ import annotations

import json

import pytest

from retinaface.outputs.records import ResumableJsonLines
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
    # a rerun after completion finds everything done and merging again changes nothing
    again = ResumableJsonLines(final, Shard())
    assert again.done() == set(order)
    before = final.read_bytes()
    again.merge(order)
    assert final.read_bytes() == before


def test_foreign_file_at_json_path_is_refused(tmp_path):
    final = tmp_path / "faces.jsonl"
    final.write_text("not json\n")
    with pytest.raises(InputError, match="not a JSON Lines file"):
        ResumableJsonLines(final, Shard()).done()
