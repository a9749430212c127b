"""The detect loop's overlap of detection and per-face stages: same records, frame order, threads, failures."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


@pytest.fixture()
def one_torch_thread():
    """One intra-op thread: PyTorch's results then do not depend on how work is split between threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from retinaface.samples import write_demo_video

    # 640x360: detected at its own size, faces large enough to be fitted
    return write_demo_video(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=8, width=640, height=360)


@pytest.fixture(scope="module")
def mesh_detector():
    from retinaface import Detector
    from retinaface.config import REFINE_PRESETS

    return Detector.from_pretrained("mobilenet0.25", device="cpu", max_size=640, mesh=True, refine=REFINE_PRESETS["video"])


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_overlapped_fits_write_the_same_records_as_fits_after_detection(tmp_path, clip, mesh_detector, one_torch_thread):
    from retinaface import run_detect

    outputs = {}
    for overlap in (False, True):
        json_path = tmp_path / f"overlap{overlap}.jsonl"
        summary = run_detect(mesh_detector, str(clip), output=tmp_path / f"overlap{overlap}.mp4", json_path=json_path,
                             include_mesh=True, progress=False, overlap_stages=overlap)
        assert summary.frames == 8
        outputs[overlap] = _records(json_path)
    assert [r["frame"] for r in outputs[True]] == list(range(8))
    fitted = [face for record in outputs[True] for face in record["faces"] if face.get("mesh_vertices")]
    assert len(fitted) >= 8 and all(face["track_id"] is not None for face in fitted)
    assert outputs[True] == outputs[False]  # byte for byte the same JSON: same faces, tracks, landmarks and meshes
    assert torch.get_num_threads() == 1


def test_network_runs_in_the_calling_thread_and_fits_in_frame_order_beside_it(tmp_path, clip, mesh_detector, monkeypatch):
    from retinaface import run_detect

    stages = mesh_detector.stages
    calls: list[tuple[str, str, int]] = []
    find, refine = mesh_detector.find, stages.refine

    opencv_threads: list[int] = []

    def recording_find(images):
        calls.append(("find", threading.current_thread().name, torch.get_num_threads()))
        opencv_threads.append(cv2.getNumThreads())
        return find(images)

    def recording_refine(images, faces):
        calls.append(("refine", threading.current_thread().name, torch.get_num_threads()))
        return refine(images, faces)

    def recording_fit(images, faces, *, tracker=None):  # no real fit: only where and in which order it runs
        calls.append(("fit", threading.current_thread().name, torch.get_num_threads()))
        for face in faces[0]:
            face.track_id = len([c for c in calls if c[0] == "fit"]) - 1  # the frame's index, written in its record
        return faces

    monkeypatch.setattr(mesh_detector, "find", recording_find)
    monkeypatch.setattr(stages, "refine", recording_refine)
    monkeypatch.setattr(stages, "track_and_fit", recording_fit)
    previous, previous_opencv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        run_detect(mesh_detector, str(clip), output=tmp_path / "o.mp4", json_path=tmp_path / "o.jsonl", include_mesh=True, progress=False)
        assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2  # restored after the run
    finally:
        torch.set_num_threads(previous)
        cv2.setNumThreads(previous_opencv)
    assert set(opencv_threads) == {1}  # OpenCV's loops (the refiner's crops, drawing) shared out the same way
    caller = threading.current_thread().name
    assert {(name, thread) for name, thread, _ in calls} == {("find", caller), ("refine", caller), ("fit", "detect-stages")}
    assert {threads for *_, threads in calls} == {1}  # 2 threads shared by 2 computing threads: 1 each
    records = _records(tmp_path / "o.jsonl")
    assert [r["frame"] for r in records] == list(range(8))
    assert all(face["track_id"] == r["frame"] for r in records for face in r["faces"])


def test_a_still_whose_fit_fails_is_skipped_and_the_folder_goes_on(tmp_path, mesh_detector, monkeypatch):
    from retinaface import run_detect

    folder = tmp_path / "album"
    folder.mkdir()
    for name, side in (("a.png", 64), ("b.png", 96), ("c.png", 64)):
        cv2.imwrite(str(folder / name), np.zeros((side, side, 3), np.uint8))

    def fails_on_96_pixels(images, faces, *, tracker=None):  # e.g. out of memory while fitting
        if images[0].shape[0] == 96:
            raise RuntimeError("out of memory\nmore details")
        return faces

    monkeypatch.setattr(mesh_detector.stages, "track_and_fit", fails_on_96_pixels)
    summary = run_detect(mesh_detector, str(folder), output=tmp_path / "out", include_mesh=True, progress=False)
    records = _records(tmp_path / "out" / "detections.jsonl")
    assert [Path(r["source"]).name for r in records] == ["a.png", "c.png"]
    assert summary.skipped == [f"detection failed on {folder / 'b.png'}: out of memory"]


def test_a_failing_fit_in_a_video_ends_the_run_with_its_error_and_publishes_nothing(tmp_path, clip, mesh_detector, monkeypatch):
    from retinaface import run_detect

    seen = []

    def fails_on_the_third_frame(images, faces, *, tracker=None):
        seen.append(1)
        if len(seen) == 3:
            raise ValueError("the fit broke")
        return faces

    monkeypatch.setattr(mesh_detector.stages, "track_and_fit", fails_on_the_third_frame)
    with pytest.raises(ValueError, match="the fit broke"):
        run_detect(mesh_detector, str(clip), output=tmp_path / "o.mp4", json_path=tmp_path / "o.jsonl", include_mesh=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
