"""Careless and hostile use of every command: nothing lost, nothing silent, never a traceback.

Each test is one class of problem. Commands run in-process through their ``main(argv)`` where possible
(fast); signals and resource limits need a real subprocess. Every refusal is checked for: exit code,
one ``error:`` line on stderr without a traceback, byte-identical pre-existing files, no temp files left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from retinaface.cli import benchmark as benchmark_cli
from retinaface.cli import detect as detect_cli
from retinaface.cli import export as export_cli
from retinaface.cli import train as train_cli
from retinaface.outputs.guards import OutputLock, lock_path
from retinaface.outputs.video import AtomicVideoWriter
from retinaface.samples import demo_frames
from retinaface.evaluation.wider_eval import SETTINGS, WiderGroundTruth, save_ground_truth

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "datasets" / "samples" / "astronaut.jpg"
DETECT = REPO / "scripts" / "detect.py"


def digest(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (files or folders), to prove nothing changed."""
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*")))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".lock") or p.name.startswith(".write-test")]


def call(main, argv, capsys) -> tuple[int, str]:
    """Run a command's ``main`` in-process; argparse refusals (SystemExit) count as exit codes."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, stderr: str, expected_code: int = 2, match: str = "") -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == expected_code, stderr
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in stderr, stderr
    assert re.search(match, lines[0]), lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = AtomicVideoWriter(path, fps=30.0, size=(320, 240))
    for frame, _ in demo_frames(num_frames=40, width=320, height=240):
        writer.write(frame)
    writer.close()
    return path


# --- outputs never replace inputs ----------------------------------------------------------------------

def test_outputs_never_replace_inputs(tmp_path, clip, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(ASTRONAUT.read_bytes())
    os.link(photo, tmp_path / "hardlink.jpg")
    folder = tmp_path / "album"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.imread(str(ASTRONAUT)))
    video = tmp_path / "mine.mp4"
    video.write_bytes(clip.read_bytes())
    weights = tmp_path / "w.safetensors"
    weights.write_bytes((REPO / "weights" / "retinaface_mobilenet0.25.safetensors").read_bytes())
    before = digest(tmp_path)
    cases = [
        (detect_cli.main, [photo, "-o", photo], "is the input"),
        (detect_cli.main, [photo, "--json", photo], "is the input"),
        (detect_cli.main, [photo, "-o", tmp_path / "hardlink.jpg"], "is the input"),  # same inode, other name
        (detect_cli.main, [photo, "-o", tmp_path / "x.jpg", "--json", tmp_path / "x.jpg"], "same file"),
        (detect_cli.main, [folder, "-o", folder], "input folder"),
        (detect_cli.main, [folder, "-o", tmp_path / "out", "--json", folder / "a.png"], "is the input"),
        (detect_cli.main, [video, "-o", video], "is the input"),
        (detect_cli.main, [photo, "--weights", weights, "--json", weights, "-o", tmp_path / "y.jpg"], "is the input"),
        (export_cli.main, ["--weights", weights, "--output", weights], "is the input"),
    ]
    for main, argv, message in cases:
        code, err = call(main, [*argv, "--no-progress"] if main is detect_cli.main else argv, capsys)
        assert_one_line_error(code, err, 2, message)
    assert digest(tmp_path) == before
    assert leftovers(tmp_path) == []


# --- a full disk: every writer notices, keeps the old file and leaves no temp file ------------------------

def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("which", ["video", "json"])
def test_disk_full_keeps_previous_outputs(tmp_path, clip, which):
    out, records = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    out.write_bytes(clip.read_bytes())  # an earlier good result at the same paths
    records.write_text('{"earlier": true}\n')
    before = digest(tmp_path)
    # the annotated clip is ~90 kB and its JSON ~4 kB: a 30 kB limit breaks the video, 2 kB the JSON
    argv = [str(clip), "-o", str(out), "--json", str(records), "--no-progress"]
    if which == "json":
        argv += ["--no-draw"]
    result = subprocess.run(
        [sys.executable, str(DETECT), *argv], capture_output=True, text=True, timeout=300,
        preexec_fn=_file_size_limit(30_000 if which == "video" else 2_000),
    )
    assert_one_line_error(result.returncode, result.stderr, 1, "cannot write .*previous file, if any, is unchanged")
    assert digest(tmp_path) == before
    assert leftovers(tmp_path) == []


# --- SIGTERM behaves like Ctrl+C -------------------------------------------------------------------------

def test_sigterm_on_video_keeps_playable_video_and_matching_json(tmp_path):
    long_video = tmp_path / "long.mp4"
    writer = AtomicVideoWriter(long_video, fps=30.0, size=(320, 240))
    for frame, _ in demo_frames(num_frames=300, width=320, height=240):
        writer.write(frame)
    writer.close()
    out, records = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(DETECT), str(long_video), "-o", str(out), "--json", str(records), "--batch-size", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    seen = b""
    deadline = time.time() + 180
    while time.time() < deadline:  # wait for the progress bar to show frames done
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        counts = [int(n) for n in re.findall(rb"(\d+)/300", seen)]
        if counts and counts[-1] >= 2:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, (seen + stderr).decode()[-800:]
    assert b"Traceback" not in seen + stderr
    done = [json.loads(line) for line in records.read_text().splitlines()]
    assert 2 <= len(done) < 300 and [r["frame"] for r in done] == list(range(len(done)))
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == len(done)
    assert leftovers(tmp_path) == []


# --- odd files in a folder are skipped and counted, never fatal ------------------------------------------

def test_folder_with_odd_files_keeps_going(tmp_path, capsys):
    folder = tmp_path / "album"
    folder.mkdir()
    image = cv2.imread(str(ASTRONAUT))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "b.pgm"), gray)
    cv2.imwrite(str(folder / "c.pbm"), (gray > 128).astype(np.uint8) * 255)
    (folder / "d.jpg").write_bytes(b"\x89PNG not really")
    (folder / "e.png").write_bytes(b"")
    (folder / "f.jpg").mkdir()  # a folder with an image name
    code, err = call(detect_cli.main, [folder, "-o", tmp_path / "out", "--no-progress"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "skipped 2 unreadable files" in err
    records = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert [Path(r["source"]).name for r in records] == ["a.jpg", "b.pgm", "c.pbm"]
    assert all(len(r["faces"]) == 1 for r in records[:2])  # the colour and the grayscale photo
    # grayscale-only formats cannot hold the coloured boxes: their annotated copies are PNGs
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.pgm.png", "c.pbm.png", "detections.jsonl"]


# --- two runs, one output --------------------------------------------------------------------------------

def test_second_run_on_a_locked_output_is_refused_and_stale_locks_are_taken_over(tmp_path, capsys):
    out = tmp_path / "out.jpg"
    out.write_bytes(b"earlier result")
    before = digest(tmp_path)
    with OutputLock(tmp_path / "out.jsonl"):  # another run writing the JSON
        code, err = call(detect_cli.main, [ASTRONAUT, "-o", out, "--no-progress"], capsys)
        assert_one_line_error(code, err, 2, f"being written by another run \\(process {os.getpid()}\\)")
    assert digest(tmp_path) == before
    lock_path(out).write_text("999999\n")  # left by a run that was killed: nobody holds the flock
    code, err = call(detect_cli.main, [ASTRONAUT, "-o", out, "--no-progress"], capsys)
    assert code == 0, err
    assert leftovers(tmp_path) == []


def test_train_refuses_a_folder_holding_an_earlier_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"earlier checkpoint")
    (run / "final.safetensors").write_bytes(b"earlier weights")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    labels = tmp_path / "label.txt"
    labels.write_text("# a.jpg\n")
    before = digest(tmp_path)
    for extra in ([], ["--epochs=0"], ["--epochs=1"]):
        code, err = call(train_cli.main, [f"--train_labels={labels}", f"--output={run}", "--no-progress", *extra], capsys)
        assert_one_line_error(code, err, 2, "holds an earlier run|epochs=0 is invalid")
    code, err = call(train_cli.main, [f"--train_labels={labels}", f"--output={labels}", "--no-progress"], capsys)
    assert_one_line_error(code, err, 2, "is a file, not a folder")
    assert digest(tmp_path) == before
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    assert "holds a run (last.pt, final.safetensors, metrics.jsonl, ...) is refused" in " ".join(capsys.readouterr().out.split())


# --- every option checked at parse time -----------------------------------------------------------------

@pytest.mark.parametrize(
    "main, argv, message",
    [
        (detect_cli.main, ["x.jpg", "--device", "xpu"], "device 'xpu'"),
        (detect_cli.main, ["x.jpg", "--batch-size", "0"], "batch-size"),
        (detect_cli.main, ["x.jpg", "--max-size", "-1"], "max-size"),
        (detect_cli.main, ["x.jpg", "--score-threshold", "nan"], "score-threshold"),
        (detect_cli.main, ["x.jpg", "--nms-threshold", "0"], "nms-threshold"),
        (detect_cli.main, ["99999999999999999999"], "camera index"),
        (detect_cli.main, [""], "empty string"),
        (export_cli.main, ["--output", "m.onnx", "--opset", "3"], "opset"),
        (export_cli.main, ["--output", "m.onnx", "--image", "missing.jpg"], "input not found"),
        (benchmark_cli.main, ["--gt-dir", ".", "--predictions", ".", "--scales", "inf"], "scales"),
        (benchmark_cli.main, ["--gt-dir", ".", "--predictions", ".", "--device", "cuda:99"], "device"),
        (train_cli.main, ["--train_labels=x", "--batch_size=0"], "batch_size=0"),
        (train_cli.main, ["--train_labels=x", "--val_every=0"], "val_every=0"),
        (train_cli.main, ["--train_labels=x", "--workers=-1"], "workers=-1"),
        (train_cli.main, ["--train_labels=x", "--image_size=0"], "image_size=0"),
        (train_cli.main, ["--train_labels=x", "--lr=1e999"], "finite"),
        (train_cli.main, ["--train_labels=x", "--on_error=ignore"], "on_error"),
        (train_cli.main, ["--train_labels=x", "--val_images=v"], "val_gt_dir"),
        (train_cli.main, ["--train_labels=x", "--device=xpu"], "device 'xpu'"),
    ],
)
def test_bad_options_are_one_sentence(tmp_path, monkeypatch, capsys, main, argv, message):
    monkeypatch.chdir(tmp_path)
    code, err = call(main, argv, capsys)
    assert_one_line_error(code, err, 2, message)
    assert list(tmp_path.iterdir()) == []  # refused before creating anything


# --- corrupt or foreign files ---------------------------------------------------------------------------

def test_corrupt_weights_are_one_sentence(tmp_path, capsys):
    bad = {
        "notjson.safetensors": lambda p: save_file({"a": torch.zeros(2)}, str(p), metadata={"model_config": "{oops"}),
        "list.safetensors": lambda p: save_file({"a": torch.zeros(2)}, str(p), metadata={"model_config": "[1]"}),
        "vgg.safetensors": lambda p: save_file({"a": torch.zeros(2)}, str(p), metadata={"model_config": '{"backbone": "vgg"}'}),
        "model_list.pt": lambda p: torch.save({"model": [1, 2], "model_config": {}}, p),
        "config_str.pt": lambda p: torch.save({"model": {}, "model_config": "mobilenet"}, p),
        "shapes.pt": lambda p: torch.save({"model": {"neck.output1.0.weight": torch.zeros(1)}, "model_config": {}}, p),
    }
    for name, make in bad.items():
        make(tmp_path / name)
        code, err = call(detect_cli.main, [ASTRONAUT, "--weights", tmp_path / name, "-o", tmp_path / "o.jpg", "--no-progress"], capsys)
        assert_one_line_error(code, err, 2, re.escape(name))
    assert not (tmp_path / "o.jpg").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished one-epoch run on six synthetic images (its last.pt is the base for broken resumes)."""
    from retinaface.datasets.synthetic import generate
    from retinaface.training.loop import train, train_config

    root = tmp_path_factory.mktemp("tiny")
    generate(root / "data", num_train=2, num_val=1, seed=1, height=96, width=128, progress=False)
    config = train_config("mobilenet0.25-synthetic", [
        f"--train_labels={root / 'data' / 'train' / 'label.txt'}", f"--output={root / 'run'}", "--image_size=64",
        "--batch_size=2", "--workers=0", "--epochs=1", "--loss.max_mesh_faces=1", "--loss.pixel_weight=0",
    ])
    train(config, progress=False)
    return root


def test_resume_with_a_foreign_or_broken_checkpoint_is_one_sentence(tmp_path, tiny_run, capsys):
    state = torch.load(tiny_run / "run" / "last.pt", weights_only=True)
    broken = {
        "no_optimizer": {k: v for k, v in state.items() if k != "optimizer"},
        "bad_rng": {**state, "loss_rng": torch.zeros(4)},
        "other_model": {**state, "model_config": {**state["model_config"], "backbone": "resnet50", "fpn_channels": 256}},
        "bad_optimizer": {**state, "optimizer": {"state": {}, "param_groups": [{"params": [0], "lr": 0.1}]}},
        "finished": state,  # 1 of 1 epochs done: --resume without --epochs has nothing to train
    }
    for name, checkpoint in broken.items():
        path = tmp_path / name / "last.pt"
        path.parent.mkdir()
        torch.save(checkpoint, path)
        before = digest(path.parent)
        extra = [] if name == "finished" else ["--epochs=2"]
        code, err = call(train_cli.main, ["--resume", path, f"--output={path.parent}", "--no-progress", *extra], capsys)
        assert_one_line_error(code, err, 2, "cannot be resumed|does not fit|already trained")
        assert digest(path.parent) == before


def test_broken_annotation_and_ground_truth_files_are_one_sentence(tmp_path, tiny_run, capsys):
    binary = tmp_path / "label.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    code, err = call(train_cli.main, [f"--train_labels={binary}", f"--output={tmp_path / 'r1'}", "--no-progress"], capsys)
    assert_one_line_error(code, err, 2, "binary file")

    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "wider_face_val.mat").write_bytes(b"")
    code, err = call(benchmark_cli.main, ["--gt-dir", gt, "--predictions", tmp_path], capsys)
    assert_one_line_error(code, err, 2, "empty \\(0-byte\\)")
    good = _tiny_ground_truth(tmp_path / "good")
    (gt / "wider_face_val.mat").write_bytes((good / "wider_face_val.mat").read_bytes()[:300])  # truncated
    code, err = call(benchmark_cli.main, ["--gt-dir", gt, "--predictions", tmp_path], capsys)
    assert_one_line_error(code, err, 2, "truncated or corrupt")

    predictions = tmp_path / "pred" / "0--Parade"
    predictions.mkdir(parents=True)
    (predictions / "0_a.txt").write_bytes(b"\xff\xfe\x00\x01" * 50)
    report = tmp_path / "ap.json"
    code, err = call(benchmark_cli.main, ["--gt-dir", good, "--predictions", predictions.parent, "--json", report], capsys)
    assert_one_line_error(code, err, 2, "not a text prediction file")
    assert not report.exists()


def _tiny_ground_truth(folder: Path) -> Path:
    gt = WiderGroundTruth(events=["0--Parade"], files=[["0_a", "0_b"]], boxes=[[np.array([[10, 10, 40, 40.0]]), np.array([[50, 50, 30, 30.0]])]])
    for setting in SETTINGS:
        gt.keep[setting] = [[np.array([1]), np.array([1])]]
    save_ground_truth(gt, folder)
    return folder


def test_benchmark_checks_outputs_before_scoring_and_warns_on_nan_scores(tmp_path, capsys):
    gt = _tiny_ground_truth(tmp_path / "gt")
    predictions = tmp_path / "pred" / "0--Parade"
    predictions.mkdir(parents=True)
    (predictions / "0_a.txt").write_text("0_a\n2\n10 10 40 40 0.9\n0 0 5 5 nan\n")
    (predictions / "0_b.txt").write_text("0_b\n2\n50 50 30 30 inf\n0 0 5 5 0.3\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    before = digest(tmp_path)
    code, err = call(benchmark_cli.main, ["--gt-dir", gt, "--predictions", predictions.parent, "--json", blocker / "ap.json"], capsys)
    assert_one_line_error(code, err, 2, "cannot write output")
    code, err = call(benchmark_cli.main, ["--gt-dir", gt, "--predictions", predictions.parent, "--json", gt / "wider_face_val.mat"], capsys)
    assert_one_line_error(code, err, 2, "is the input")
    assert digest(tmp_path) == before
    report = tmp_path / "ap.json"
    code, err = call(benchmark_cli.main, ["--gt-dir", gt, "--predictions", predictions.parent, "--json", report], capsys)
    assert code == 0 and "dropped 2 prediction rows holding NaN or infinity" in err, err
    data = json.loads(report.read_text())
    # the finite boxes are left: the 0.9 one finds one of the two faces, the 0.3 one is a false positive
    assert data["nonfinite_predictions_dropped"] == 2 and data["medium"] == pytest.approx(0.5)


# --- wrong results without a word --------------------------------------------------------------------------

def test_mid_stream_size_change_reports_each_frames_own_size(tmp_path, monkeypatch, detector):
    from retinaface import run_detect
    from retinaface.runner import sources
    from retinaface.media.video import count_video_frames

    clip = tmp_path / "clip.mp4"
    writer = AtomicVideoWriter(clip, fps=10.0, size=(160, 120))
    for frame, _ in demo_frames(num_frames=10, width=160, height=120):
        writer.write(frame)
    writer.close()

    class SizeChangingVideo(sources.VideoSource):
        def __iter__(self):
            for index, frame in enumerate(super().__iter__()):
                yield frame if index < 4 else cv2.resize(frame, (80, 60))

    monkeypatch.setattr(sources, "VideoSource", SizeChangingVideo)
    out, records = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    summary = run_detect(detector, str(clip), output=out, json_path=records, progress=False)
    sizes = [(r["width"], r["height"]) for r in map(json.loads, records.read_text().splitlines())]
    assert sizes == [(160, 120)] * 4 + [(80, 60)] * 6
    assert count_video_frames(out) == 10  # none dropped by the encoder
    assert len(summary.warnings) == 1 and "6 frames differ in size from the first (160x120)" in summary.warnings[0]


def test_truncated_video_says_how_many_frames_were_decoded(tmp_path, detector):
    from retinaface import run_detect

    video = tmp_path / "clip.avi"  # Motion-JPEG: still opens when cut, its header announces all frames
    writer = AtomicVideoWriter(video, fps=10.0, size=(64, 48))
    rng = np.random.default_rng(0)
    for _ in range(10):  # noise: the frames, not the header, make up most of the file
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.close()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    summary = run_detect(detector, str(video), output=tmp_path / "o.avi", progress=False)
    assert 0 < summary.frames < 10
    assert summary.warnings == [f"{video} announces 10 frames but only {summary.frames} could be decoded (damaged or truncated file?)"]


def test_one_image_failing_detection_is_skipped_not_fatal(tmp_path, detector, monkeypatch):
    from retinaface import run_detect

    folder = tmp_path / "album"
    folder.mkdir()
    for name, side in (("a.png", 64), ("b.png", 96), ("c.png", 64)):
        cv2.imwrite(str(folder / name), np.zeros((side, side, 3), np.uint8))
    real = detector.find

    def fails_on_96_pixels(images):  # e.g. out of memory on one huge image
        if any(image.shape[0] == 96 for image in images):
            raise RuntimeError("CUDA out of memory\nmore details")
        return real(images)

    monkeypatch.setattr(detector, "find", fails_on_96_pixels)
    summary = run_detect(detector, str(folder), output=tmp_path / "out", batch_size=3, progress=False)
    records = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert [Path(r["source"]).name for r in records] == ["a.png", "c.png"]
    assert summary.skipped == [f"detection failed on {folder / 'b.png'}: CUDA out of memory"]


def test_benchmark_stopped_by_sigterm_keeps_its_predictions_and_resumes(tmp_path):
    from retinaface.utils.signals import Terminated
    from retinaface.evaluation.wider_benchmark import predict_wider
    from retinaface.evaluation.wider_eval import load_ground_truth

    gt = load_ground_truth(_tiny_ground_truth(tmp_path / "gt"))
    images = tmp_path / "WIDER_val" / "images" / "0--Parade"
    images.mkdir(parents=True)
    for name in ("0_a", "0_b"):
        cv2.imwrite(str(images / f"{name}.jpg"), np.zeros((32, 32, 3), np.uint8))
    calls = []

    def terminated_on_the_second_image(image):
        calls.append(image.shape)
        if len(calls) == 2:
            raise Terminated(signal.SIGTERM)
        return []

    pred = tmp_path / "pred"
    run = predict_wider(terminated_on_the_second_image, tmp_path / "WIDER_val", gt, pred, progress=False)
    assert run.interrupted and run.written == 1
    assert sorted(p.name for p in (pred / "0--Parade").iterdir()) == ["0_a.txt"] and leftovers(tmp_path) == []
    again = predict_wider(lambda image: [], tmp_path / "WIDER_val", gt, pred, progress=False)
    assert (again.reused, again.written, again.interrupted) == (1, 1, False)


def test_prediction_folder_of_another_detector_is_not_reused(tmp_path):
    from retinaface.errors import InputError
    from retinaface.evaluation.wider_benchmark import claim_prediction_folder

    pred = tmp_path / "pred"
    claim_prediction_folder(pred, {"weights": "a", "flip": False}, overwrite=False)
    (pred / "0--Parade").mkdir()
    (pred / "0--Parade" / "0_a.txt").write_text("0_a\n0\n")
    claim_prediction_folder(pred, {"weights": "a", "flip": False}, overwrite=False)  # the same run resumes
    with pytest.raises(InputError, match="holds predictions made with other settings"):
        claim_prediction_folder(pred, {"weights": "a", "flip": True}, overwrite=False)
    claim_prediction_folder(pred, {"weights": "a", "flip": True}, overwrite=True)  # redoes everything
    assert json.loads((pred / "settings.json").read_text()) == {"weights": "a", "flip": True}
    (pred / "settings.json").unlink()
    with pytest.raises(InputError, match="unknown origin"):
        claim_prediction_folder(pred, {"weights": "a"}, overwrite=False)
