"""scripts/detect.py end to end, as a user runs it.

The commands run in-process through ``main(argv)`` (tests/cli_runner.py: the same exit code, stdout and
stderr a process gives); ``python scripts/detect.py`` itself runs as a process for the plain photo, for
Ctrl+C, and ``scripts/export_onnx.py`` for the exported model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface.cli.detect import main as detect_main
from retinaface.outputs.video import AtomicVideoWriter
from retinaface.samples import demo_frames

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "detect.py"
ASTRONAUT = REPO / "datasets" / "samples" / "astronaut.jpg"


def run(*args, cwd=None):
    """``detect ARGS --no-progress`` in-process."""
    return run_cli(detect_main, *args, "--no-progress", cwd=cwd)


def run_script(*args, cwd=None, timeout=300):
    """``python scripts/detect.py ARGS --no-progress`` as a process: the script as users start it."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args), "--no-progress"],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    """A 12-frame 1280x720 clip with three pasted copies of the sample face, and the face boxes."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = AtomicVideoWriter(path, fps=12.0, size=(1280, 720))
    face_boxes = []
    for frame, boxes in demo_frames(num_frames=12, width=1280, height=720):
        writer.write(frame)
        face_boxes.append(boxes)
    writer.close()
    return path, face_boxes


@pytest.fixture(scope="module")
def full_size_run(short_video, tmp_path_factory):
    """``short_video`` detected at full size (``--max-size 0``), PyTorch backend, four frames a batch, with an
    annotated copy: the folder holding ``annotated.mp4`` and ``v.jsonl``."""
    folder = tmp_path_factory.mktemp("full")
    result = run(short_video[0], "--output", folder / "annotated.mp4", "--json", folder / "v.jsonl", "--batch-size", "4", "--max-size", "0", "--backend", "torch")
    assert "on cpu, torch" in result.stdout
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def full_size_records(full_size_run):
    """JSON records of ``short_video`` detected at full size (:func:`full_size_run`)."""
    return read_jsonl(full_size_run / "v.jsonl")


@pytest.fixture(scope="module")
def default_size_run(short_video, tmp_path_factory):
    """``detect clip.mp4 --no-draw --json only.jsonl`` (the default detection size) run in an empty working
    folder: that folder, holding what the run wrote there, and the run's result."""
    folder = tmp_path_factory.mktemp("default")
    result = run(short_video[0], "--no-draw", "--json", folder / "only.jsonl", cwd=folder)
    return folder, result


def test_image_writes_annotated_copy_and_json(tmp_path):
    result = run_script(ASTRONAUT, "--output", tmp_path / "out.png", "--json", tmp_path / "faces.jsonl")
    assert result.returncode == 0, result.stderr
    assert "1 faces in 1 images" in result.stdout
    (record,) = read_jsonl(tmp_path / "faces.jsonl")
    assert record["source"] == str(ASTRONAUT) and record["frame"] == 0
    assert (record["width"], record["height"]) == (512, 512)
    (face,) = record["faces"]
    assert face["score"] > 0.99 and len(face["landmarks"]) == 5
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200  # the face in the upper middle of the photo
    annotated, original = cv2.imread(str(tmp_path / "out.png")), cv2.imread(str(ASTRONAUT))
    assert annotated.shape == original.shape
    changed = np.abs(annotated.astype(int) - original.astype(int)).sum(axis=2) > 60
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 100 and xs.min() >= x1 - 15 and xs.max() <= x2 + 15  # drawing is at the face


def test_default_outputs_go_to_the_working_folder(tmp_path):
    result = run(ASTRONAUT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut_faces.jpg", "astronaut_faces.jsonl"]
    assert "on cpu, torch" in result.stdout  # a single photo: no export to wait for


def test_folder_with_mixed_formats_and_a_corrupt_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    original = cv2.imread(str(ASTRONAUT))
    cv2.imwrite(str(images / "a_gray.png"), cv2.cvtColor(original, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "b_rgba.png"), cv2.cvtColor(original, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(images / "c_16bit.png"), original.astype(np.uint16) * 257)
    (images / "d_broken.jpg").write_text("not really a jpeg")
    (images / "notes.txt").write_text("ignored")
    out = tmp_path / "annotated"
    result = run(images, "--output", out, "--json", tmp_path / "all.jsonl", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "d_broken.jpg" in result.stderr and "skipped 1" in result.stderr
    assert "on cpu, onnxruntime" in result.stdout  # a folder's default engine on the CPU
    records = read_jsonl(tmp_path / "all.jsonl")
    assert [Path(r["source"]).name for r in records] == ["a_gray.png", "b_rgba.png", "c_16bit.png"]
    assert all(len(r["faces"]) == 1 and r["faces"][0]["score"] > 0.99 for r in records)
    assert sorted(p.name for p in out.iterdir()) == ["a_gray.png", "b_rgba.png", "c_16bit.png"]


def test_video_keeps_size_and_rate_and_finds_pasted_faces(short_video, full_size_run):
    video, face_boxes = short_video
    out = full_size_run / "annotated.mp4"  # --output annotated.mp4 --json v.jsonl --batch-size 4 --max-size 0
    records = read_jsonl(full_size_run / "v.jsonl")
    assert [r["frame"] for r in records] == list(range(12)) and len(face_boxes) == 12
    for record, truth in zip(records, face_boxes):
        assert (record["width"], record["height"]) == (1280, 720)
        assert len(record["faces"]) == 3
        # each hand-annotated face is found once, with IoU >= 0.5
        iou = box_iou(torch.tensor([f["box"] for f in record["faces"]]), torch.tensor(truth, dtype=torch.float32))
        assert sorted(iou.argmax(dim=1).tolist()) == [0, 1, 2] and (iou.max(dim=1).values >= 0.5).all()
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1280, 720)
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 12


def test_no_draw_writes_json_only(default_size_run):
    folder, result = default_size_run  # --no-draw --json only.jsonl, run in `folder`
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["only.jsonl"]


def _bad_inputs(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image")
    (tmp_path / "text.mp4").write_text("this is not a video")
    (tmp_path / "random.png").write_bytes(os.urandom(2048))
    (tmp_path / "data.xyz").write_text("?")
    return {
        "missing": (tmp_path / "nope.jpg", "input not found"),
        "empty folder": (tmp_path / "empty_dir", "no images"),
        "zero bytes": (tmp_path / "zero.jpg", "empty (0-byte)"),
        "text as jpg": (tmp_path / "text.jpg", "cannot decode"),
        "corrupt png": (tmp_path / "random.png", "cannot decode"),
        "text as mp4": (tmp_path / "text.mp4", "as a video"),
        "unknown type": (tmp_path / "data.xyz", "cannot tell what"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "empty folder", "zero bytes", "text as jpg", "corrupt png", "text as mp4", "unknown type"]
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, case):
    path, message = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    result = run(path, "--output", out_dir / ("o.mp4" if "mp4" in case else "o.jpg"), "--json", out_dir / "o.jsonl")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not any(out_dir.glob("*")) if out_dir.exists() else True


def test_unwritable_output_is_reported(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run(ASTRONAUT, "--output", blocker / "out.jpg")
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot write output") and "Traceback" not in result.stderr


def test_bad_weights_and_options(tmp_path):
    result = run(ASTRONAUT, "--weights", tmp_path / "missing.safetensors", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: weights")
    result = run(ASTRONAUT, "--score-threshold", "1.5", cwd=tmp_path)
    assert result.returncode == 2 and "score-threshold" in result.stderr


def test_ctrl_c_closes_outputs_with_frames_done(tmp_path):
    long_video = tmp_path / "long.mp4"
    writer = AtomicVideoWriter(long_video, fps=30.0, size=(640, 360))
    for frame, _ in demo_frames(num_frames=300, width=640, height=360):
        writer.write(frame)
    writer.close()
    out, records = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(long_video), "--output", str(out), "--json", str(records)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # a shell's background jobs (CI, nohup ... &) start with SIGINT ignored, which Python keeps;
        # restore the default so the child reacts to Ctrl+C as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Wait until the progress bar reports a few frames, then interrupt like a user pressing Ctrl+C.
    seen = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        counts = [int(n) for n in re.findall(rb"(\d+)/300", seen)]
        if counts and counts[-1] >= 5:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, (seen + stderr).decode()[-500:]
    done = read_jsonl(records)
    assert 5 <= len(done) < 300
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == len(done)
    assert not list(tmp_path.glob(".*partial*"))  # temp files were moved into place


def test_onnxruntime_backend_and_exported_file_on_video(tmp_path, short_video, full_size_records):
    video, _ = short_video
    onnx_file = tmp_path / "m.onnx"
    export = subprocess.run([sys.executable, str(REPO / "scripts" / "export_onnx.py"), "--output", str(onnx_file)], capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    assert "mesh_coefficients" in export.stdout and "detections per image: the same" in export.stdout
    ort_run = run(video, "--no-draw", "--json", tmp_path / "o.jsonl", "--max-size", "0", "--backend", "onnxruntime", "--weights", onnx_file)
    assert ort_run.returncode == 0, ort_run.stderr
    torch_records, ort_records = full_size_records, read_jsonl(tmp_path / "o.jsonl")
    assert [r["frame"] for r in torch_records] == [r["frame"] for r in ort_records] == list(range(12))
    assert sum(len(r["faces"]) for r in torch_records) >= 36  # three faces a frame at full size
    for a, b in zip(torch_records, ort_records):
        assert len(a["faces"]) == len(b["faces"])
        for fa, fb in zip(a["faces"], b["faces"]):
            assert np.abs(np.array(fa["box"]) - np.array(fb["box"])).max() <= 0.5


def test_video_default_detection_size_is_640(tmp_path, short_video, full_size_records, default_size_run):
    video, face_boxes = short_video
    folder, result = default_size_run  # no --max-size
    explicit = run(video, "--no-draw", "--json", tmp_path / "e.jsonl", "--max-size", "640")
    assert result.returncode == 0 and explicit.returncode == 0, result.stderr + explicit.stderr
    assert "on cpu, onnxruntime" in result.stdout  # the default engine for videos on the CPU
    records, explicit_records = read_jsonl(folder / "only.jsonl"), read_jsonl(tmp_path / "e.jsonl")
    assert [r["frame"] for r in records] == [r["frame"] for r in explicit_records] == list(range(12)) and len(face_boxes) == 12
    # the default is exactly an explicit --max-size 640: the same faces in every frame
    for default, at_640 in zip(records, explicit_records):
        assert len(default["faces"]) == len(at_640["faces"])
        for a, b in zip(default["faces"], at_640["faces"]):
            np.testing.assert_allclose(a["box"], b["box"], atol=1e-3)
            assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    # still reported in original 1280x720 pixels, and the two larger faces are found at 640 px
    for record, truth in zip(records, face_boxes):
        assert (record["width"], record["height"]) == (1280, 720)
        iou = box_iou(torch.tensor([f["box"] for f in record["faces"]]).reshape(-1, 4), torch.tensor(truth[:2], dtype=torch.float32))
        assert (iou.max(dim=0).values >= 0.5).all()
    # and 640 px is not full size: there the smallest copy is found in every frame
    assert len(full_size_records) == 12 and all(len(r["faces"]) == 3 for r in full_size_records)
    assert sum(len(r["faces"]) for r in records) < 36


def test_mesh_overlay_and_json(tmp_path):
    plain, meshed = tmp_path / "plain.png", tmp_path / "mesh.png"
    assert run(ASTRONAUT, "--output", plain, "--json", tmp_path / "p.jsonl").returncode == 0
    result = run(ASTRONAUT, "--mesh", "--output", meshed, "--json", tmp_path / "m.jsonl")
    assert result.returncode == 0, result.stderr
    (face,) = read_jsonl(tmp_path / "m.jsonl")[0]["faces"]
    assert len(face["mesh_vertices"]) == 468 and len(face["mesh_coefficients"]) == 144
    a, b = cv2.imread(str(plain)).astype(int), cv2.imread(str(meshed)).astype(int)
    changed = np.abs(a - b).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = face["box"]
    assert changed.sum() > 500  # the mesh is drawn ...
    assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1  # ... inside the box
    assert set(face["mesh_residual"]) == {"pixel_l1", "landmark_px"} and face["mesh_residual"]["landmark_px"] < 3
    ort = run(ASTRONAUT, "--mesh", "--backend", "onnxruntime", "--no-draw", "--json", tmp_path / "o.jsonl", cwd=tmp_path)
    assert ort.returncode == 0 and "onnxruntime" in ort.stdout, ort.stderr
    (ort_face,) = read_jsonl(tmp_path / "o.jsonl")[0]["faces"]
    assert np.abs(np.array(ort_face["mesh_vertices"]) - np.array(face["mesh_vertices"])).max() <= 0.1 + 1e-6  # one step of the JSON's 1 decimal
    # --mesh fits to the refined landmarks, which --refine-landmarks alone also reports
    assert run(ASTRONAUT, "--refine-landmarks", "--no-draw", "--json", tmp_path / "r.jsonl").returncode == 0
    (refined,) = read_jsonl(tmp_path / "r.jsonl")[0]["faces"]
    (plain_face,) = read_jsonl(tmp_path / "p.jsonl")[0]["faces"]
    np.testing.assert_allclose(face["landmarks"], refined["landmarks"], atol=0.01 + 1e-6)  # one step of the JSON's 2 decimals
    assert np.abs(np.array(refined["landmarks"]) - np.array(plain_face["landmarks"])).max() > 0.05
    assert refined["pose"] != plain_face["pose"]


def test_json_carries_head_pose_and_video_faces_keep_their_track_ids(tmp_path, short_video, default_size_run):
    result = run(ASTRONAUT, "--no-draw", "--json", tmp_path / "a.jsonl")
    assert result.returncode == 0, result.stderr
    (face,) = read_jsonl(tmp_path / "a.jsonl")[0]["faces"]
    assert set(face["pose"]) == {"yaw", "pitch", "roll"} and "track_id" not in face
    assert all(abs(angle) < 25 for angle in face["pose"].values())  # the astronaut faces the camera

    video, face_boxes = short_video
    folder, result = default_size_run  # --no-draw --json only.jsonl
    assert result.returncode == 0, result.stderr
    ids_per_face: dict[int, set] = {0: set(), 1: set()}
    records = read_jsonl(folder / "only.jsonl")
    assert len(records) == len(face_boxes) == 12
    for record, truth in zip(records, face_boxes):
        found = torch.tensor([f["box"] for f in record["faces"]]).reshape(-1, 4)
        iou = box_iou(torch.tensor(truth[:2], dtype=torch.float32), found)
        for k, row in enumerate(iou):
            ids_per_face[k].add(record["faces"][int(row.argmax())]["track_id"])
        assert all(f["pose"] is None or set(f["pose"]) == {"yaw", "pitch", "roll"} for f in record["faces"])
    # the two large moving faces each keep one id for the whole clip, and the ids differ
    assert all(len(ids) == 1 for ids in ids_per_face.values()) and ids_per_face[0] != ids_per_face[1]
    no_mesh = run(ASTRONAUT, "--mesh-steps", "3", cwd=tmp_path)
    assert no_mesh.returncode == 2 and "--mesh-steps needs --mesh" in no_mesh.stderr
