"""`retinaface detect` on phone/browser media and with the face workflows, end to end (in-process through
``main(argv)``, tests/cli_runner.py; tests/scripts/test_detect_cli.py runs the script as a process)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from retinaface.cli.detect import main as detect_main
from retinaface.samples import ASTRONAUT_FACE_BOX, demo_frames

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "datasets" / "samples" / "astronaut.jpg"


def run(*args):
    """``detect ARGS --no-progress`` in-process."""
    return run_cli(detect_main, *args, "--no-progress")


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def clip_with_tone(tmp_path_factory):
    """24 frames of 640x360 demo video (three moving faces) with a 440 Hz tone, written with PyAV."""
    path = tmp_path_factory.mktemp("clip") / "tone.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        truth = []
        for frame, boxes in demo_frames(num_frames=24, width=640, height=360):
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
            truth.append(boxes)
        out.mux(video.encode(None))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(88200) / 44100)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, start
            out.mux(audio.encode(chunk))
        out.mux(audio.encode(None))
    return path, truth


def _probe(path):
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate if container.streams.audio else None
        seconds = sum(f.samples for f in container.decode(audio=0)) / rate if rate else 0.0
    return codec, frames, seconds


@pytest.fixture(scope="module")
def kept_run(clip_with_tone, tmp_path_factory):
    """``detect clip -o out.mp4 --blur --keep-track-ids 1`` (tracking implied): the folder with out.mp4 and
    out.jsonl, one run shared by the output-format, --keep-track-ids and --smooth tests."""
    folder = tmp_path_factory.mktemp("kept")
    result = run(clip_with_tone[0], "-o", folder / "out.mp4", "--blur", "--keep-track-ids", "1")
    assert result.returncode == 0, result.stderr
    return folder


def test_video_output_is_h264_with_the_audio(clip_with_tone, kept_run):
    path, _ = clip_with_tone
    codec, frames, seconds = _probe(kept_run / "out.mp4")
    _, source_frames, source_seconds = _probe(path)
    assert codec == "h264" and len(frames) == len(source_frames) == 24
    assert seconds == pytest.approx(source_seconds, abs=0.05)
    records = read_jsonl(kept_run / "out.jsonl")
    assert len(records) == 24
    # At 640x360 the smallest copy is too small to detect; the two others keep their track ids throughout:
    # 0 for the large copy on the left, 1 for the mirrored one in the middle.
    for record in records:
        boxes = {f["track_id"]: f["box"] for f in record["faces"]}
        assert sorted(boxes) == [0, 1] and len(record["faces"]) == 2
        assert boxes[0][0] < 300 < boxes[1][0]


def test_video_blur_keeps_the_largest_face_and_the_audio(clip_with_tone, tmp_path):
    path, truth = clip_with_tone
    result = run(path, "-o", tmp_path / "blurred.mp4", "--blur", "--keep-largest")
    assert result.returncode == 0, result.stderr
    _, frames, seconds = _probe(tmp_path / "blurred.mp4")
    _, source_frames, _ = _probe(path)
    assert seconds > 1.9
    assert len(frames) == len(source_frames) == len(truth) == 24
    for frame, source, boxes in zip(frames, source_frames, truth):
        assert len(boxes) == 3
        energy = []
        for x1, y1, x2, y2 in boxes:
            x1, y1, x2, y2 = int(x1) + 2, int(y1) + 2, int(x2) - 2, int(y2) - 2
            lap = lambda a: cv2.Laplacian(cv2.cvtColor(a[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()  # noqa: E731
            energy.append(lap(frame) / lap(source))
        largest = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        assert energy[largest] > 0.5  # kept (only re-encoding losses)
        assert energy[1] < 0.2  # the mid-size copy; the smallest is below detection size at 640x360


def _sharpness(image, box) -> float:
    """Laplacian variance inside ``box`` shrunk by 2 px: what blurring removes."""
    x1, y1, x2, y2 = int(box[0]) + 2, int(box[1]) + 2, int(box[2]) - 2, int(box[3]) - 2
    return float(cv2.Laplacian(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _truth_index(face, truth) -> int:
    """Which generated copy (index into the frame's hand-mapped boxes) a reported face is, by IoU >= 0.5."""
    iou = box_iou(torch.tensor([face["box"]], dtype=torch.float64), torch.tensor(truth, dtype=torch.float64))[0]
    assert iou.max() >= 0.5, (face["box"], truth)
    return int(iou.argmax())


def test_keep_track_ids_leaves_that_face_and_blurs_the_others(clip_with_tone, kept_run):
    """Keep track 1 (not the largest face, so --keep-largest would not do it): its face region comes out as it
    went in (up to re-encoding), the other detected face is blurred, frame by frame."""
    path, truth = clip_with_tone
    _, frames, _ = _probe(kept_run / "out.mp4")
    _, source_frames, _ = _probe(path)
    records = read_jsonl(kept_run / "out.jsonl")
    assert len(frames) == len(source_frames) == len(records) == len(truth) == 24
    kept_copies = set()
    for frame, source, record, boxes in zip(frames, source_frames, records, truth):
        assert sorted(f["track_id"] for f in record["faces"]) == [0, 1]
        for face in record["faces"]:
            copy = _truth_index(face, boxes)
            ratio = _sharpness(frame, boxes[copy]) / _sharpness(source, boxes[copy])
            if face["track_id"] == 1:
                kept_copies.add(copy)
                assert ratio > 0.5, (record["frame"], ratio)  # kept: only re-encoding losses
                x1, y1, x2, y2 = (int(v) for v in boxes[copy])
                assert np.abs(frame[y1:y2, x1:x2].astype(int) - source[y1:y2, x1:x2]).mean() < 6
            else:
                assert ratio < 0.2, (record["frame"], ratio)  # anonymised
    assert len(kept_copies) == 1  # one and the same face kept throughout


def test_smooth_makes_video_landmarks_steadier(clip_with_tone, kept_run, tmp_path):
    """--smooth against plain tracking (the anonymising run: detection and tracks are those of --track) on the
    same clip: other landmarks, following the same faces, with less frame-to-frame jitter (the mean second
    difference along each track, px)."""
    path, truth = clip_with_tone
    result = run(path, "--no-draw", "--json", tmp_path / "smooth.jsonl", "--smooth")
    assert result.returncode == 0, result.stderr

    def tracks(records):
        assert len(records) == len(truth) == 24
        found: dict[int, list] = {}
        for record, boxes in zip(records, truth):
            for face in record["faces"]:
                found.setdefault(face["track_id"], []).append((_truth_index(face, boxes), np.array(face["landmarks"])))
        return found

    plain, smooth = tracks(read_jsonl(kept_run / "out.jsonl")), tracks(read_jsonl(tmp_path / "smooth.jsonl"))
    assert sorted(plain) == sorted(smooth) == [0, 1]
    for track in (0, 1):
        assert len(plain[track]) == len(smooth[track]) == 24
        assert [c for c, _ in plain[track]] == [c for c, _ in smooth[track]]  # the same face throughout
        raw = np.stack([points for _, points in plain[track]])
        steady = np.stack([points for _, points in smooth[track]])
        assert np.abs(steady - raw).max() > 1.0  # smoothing changed the landmarks ...
        assert np.abs(steady - raw).mean() < 3.0  # ... without losing the face
        jitter = lambda points: np.abs(np.diff(points, n=2, axis=0)).mean()  # noqa: E731
        assert jitter(steady) < 0.75 * jitter(raw), (track, jitter(steady), jitter(raw))


# ArcFace's published 112x112 five-point template (InsightFace), eyes only: where arcface112 crops put them.
ARCFACE_EYES = np.array([[38.2946, 51.6963], [73.5318, 51.5014]])


def _assert_crop_puts_the_eyes_where_its_style_does(face, style, detector):
    """The crop of one JSON ``face`` has the style's size, and the eyes land where the style's template puts
    them: by the recorded transform, and in the crop's own pixels (the face detected again inside it)."""
    crop = cv2.imread(face["crop"]["path"])
    size = {"arcface112": 112, "ffhq": 512}[style]
    assert crop.shape == (size, size, 3) and face["crop"]["size"] == [size, size] and face["crop"]["style"] == style
    landmarks = np.array(face["landmarks"])
    if style == "arcface112":
        eyes = ARCFACE_EYES
    else:
        # FFHQ's recipe: a square 4x the eye distance wide (when that exceeds 3.6x eye-to-mouth), centred on the
        # eye midpoint moved a tenth of the way to the mouth: the eyes S/8 either side of the middle, and above
        # the middle by a tenth of the eye-to-mouth distance at the crop's scale
        eye_distance = np.linalg.norm(landmarks[1] - landmarks[0])
        eye_to_mouth = np.linalg.norm(landmarks[3:].mean(0) - landmarks[:2].mean(0))
        assert 4 * eye_distance > 3.6 * eye_to_mouth
        rise = 0.1 * eye_to_mouth * size / (4 * eye_distance)
        eyes = np.array([[size * 3 / 8, size / 2 - rise], [size * 5 / 8, size / 2 - rise]])
    # the recorded transform takes the photo's eyes there (ArcFace: a least-squares fit of all five points) ...
    transform = np.array(face["crop"]["transform"])
    np.testing.assert_allclose(landmarks[:2] @ transform[:, :2].T + transform[:, 2], eyes, atol={"arcface112": 4.0, "ffhq": 2.0}[style])
    # ... and the crop's pixels show them there: the face detected again inside the crop (a grey margin gives
    # the tight 112 px crop room to be found)
    margin = size // 2
    padded = cv2.copyMakeBorder(crop, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    (again,) = detector(padded)
    np.testing.assert_allclose(again.landmarks[:2] - margin, eyes, atol=0.06 * size)
    found_distance = np.linalg.norm(again.landmarks[1] - again.landmarks[0]) / size
    assert found_distance == pytest.approx(np.linalg.norm(eyes[1] - eyes[0]) / size, abs=0.02)  # 0.31 vs 0.25 of the side


def test_crop_style_ffhq_gives_512_px_crops_with_the_eyes_where_ffhq_puts_them(tmp_path, detector):
    result = run(ASTRONAUT, "--no-draw", "--json", tmp_path / "c.jsonl", "--crops", tmp_path / "crops", "--crop-style", "ffhq")
    assert result.returncode == 0, result.stderr
    (face,) = read_jsonl(tmp_path / "c.jsonl")[0]["faces"]
    _assert_crop_puts_the_eyes_where_its_style_does(face, "ffhq", detector)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animation_gives_one_record_per_frame(tmp_path, suffix):
    source = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    frames = [Image.fromarray(np.roll(source, 20 * i, axis=1)) for i in range(3)]
    frames[0].save(tmp_path / f"anim{suffix}", save_all=True, append_images=frames[1:], duration=120, loop=0)
    result = run(tmp_path / f"anim{suffix}", "-o", tmp_path / f"out{suffix}", "--json", tmp_path / "anim.jsonl")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "anim.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert all(len(r["faces"]) == 1 for r in records)
    xs = [r["faces"][0]["box"][0] for r in records]
    assert xs[1] - xs[0] == pytest.approx(20, abs=3) and xs[2] - xs[1] == pytest.approx(20, abs=3)
    with Image.open(tmp_path / f"out{suffix}") as written:
        assert written.n_frames == 3


def test_exif_rotated_phone_photo_gives_upright_boxes(tmp_path):
    upright = Image.open(ASTRONAUT)
    exif = Image.Exif()
    exif[0x0112] = 6  # the usual portrait phone photo: stored turned, viewers turn it clockwise
    upright.rotate(90, expand=True).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    result = run(tmp_path / "phone.jpg", "-o", tmp_path / "phone_faces.jpg")
    assert result.returncode == 0, result.stderr
    (record,) = read_jsonl(tmp_path / "phone_faces.jsonl")
    (face,) = record["faces"]
    assert (record["width"], record["height"]) == (512, 512)
    # the stored picture has the face at (y1, 512 - x2, y2, 512 - x1) of the hand-drawn box (turned
    # counter-clockwise); the record reports it where the upright photo has it, the hand-drawn box itself
    assert face["box"] == pytest.approx(list(ASTRONAUT_FACE_BOX), abs=4.0)
    assert abs(face["roll"]) < 15


def test_rotated_photo_with_rotations_and_arcface_crops(tmp_path, detector):
    turned = np.rot90(cv2.imread(str(ASTRONAUT)), 1)
    cv2.imwrite(str(tmp_path / "turned.png"), np.ascontiguousarray(turned))
    result = run(tmp_path / "turned.png", "--no-draw", "--json", tmp_path / "rot.jsonl", "--rotations", "--crops", tmp_path / "crops",
                 "--crop-style", "arcface112")
    assert result.returncode == 0, result.stderr
    (face,) = read_jsonl(tmp_path / "rot.jsonl")[0]["faces"]
    assert face["roll"] == pytest.approx(-90, abs=15)
    # 112 x 112 and upright in the crop: the eyes level, where ArcFace's template has them, also in the pixels
    _assert_crop_puts_the_eyes_where_its_style_does(face, "arcface112", detector)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scales", "0.5,x"], "comma-separated numbers"),
        (["--scales", "0,1"], "--scales must be positive"),
        (["--keep-largest"], "need --blur or --pixelate"),
        (["--blur", "--pixelate"], "not allowed with"),
        (["--anonymize-strength", "0", "--blur"], "is outside (0, 100]"),
        (["--max-pixels", "nan"], "--max-pixels"),
        (["--carry-frames", "-1", "--blur"], "--carry-frames"),
    ],
)
def test_bad_workflow_options_are_one_sentence(args, message):
    result = run(ASTRONAUT, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
