"""Phone and browser media: EXIF orientation, HEIC, animated GIF/WebP, rotated videos, H.264 with audio."""

from __future__ import annotations

import io as stdio

import av
import cv2
import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageOps

from retinaface.errors import InputError
from retinaface.media.video import VideoSource
from retinaface.media.images import read_image
from retinaface.media.images import EXIF_ORIENTATION_TAG, apply_exif_orientation
from retinaface.outputs.video import H264VideoWriter, bgr_to_yuv420p
from retinaface.samples import ASTRONAUT, ASTRONAUT_FACE_BOX

# How each EXIF orientation stores the upright picture: the inverse of what a viewer applies.
_STORE = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, 1),  # viewers turn it 90 degrees clockwise back
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, -1),
}


def _jpeg_with_orientation(path, upright_rgb: np.ndarray, orientation: int) -> None:
    image = Image.fromarray(np.ascontiguousarray(_STORE[orientation](upright_rgb)))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    image.save(path, quality=95, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_exif_orientation_matches_pillow(orientation):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    buffer = stdio.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", exif=exif)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(stdio.BytesIO(buffer.getvalue()))))
    np.testing.assert_array_equal(apply_exif_orientation(stored, orientation), reference)


# Where a box (x1, y1, x2, y2) of the upright w x h picture lies in the stored pixels of each orientation,
# worked out by hand from _STORE (the stored picture of 5-8 is h wide and w high).
_STORED_BOX = {
    1: lambda b, w, h: (b[0], b[1], b[2], b[3]),
    2: lambda b, w, h: (w - b[2], b[1], w - b[0], b[3]),
    3: lambda b, w, h: (w - b[2], h - b[3], w - b[0], h - b[1]),
    4: lambda b, w, h: (b[0], h - b[3], b[2], h - b[1]),
    5: lambda b, w, h: (b[1], b[0], b[3], b[2]),
    6: lambda b, w, h: (b[1], w - b[2], b[3], w - b[0]),
    7: lambda b, w, h: (h - b[3], w - b[2], h - b[1], w - b[0]),
    8: lambda b, w, h: (h - b[3], b[0], h - b[1], b[2]),
}


def _iou(a, b) -> float:
    import torch
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor(np.array([a]), dtype=torch.float64), torch.tensor(np.array([b]), dtype=torch.float64))[0, 0])


def test_every_exif_orientation_gives_the_upright_faces(tmp_path, detector):
    upright_rgb = cv2.cvtColor(read_image(ASTRONAUT), cv2.COLOR_BGR2RGB)
    upright_rgb = np.ascontiguousarray(upright_rgb[:, 64:])  # not square, so a missed turn shows in the size
    height, width = upright_rgb.shape[:2]
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    truth = (x1 - 64, y1, x2 - 64, y2)  # the hand-drawn face box in the cut picture
    landmarks = []
    for orientation in range(1, 9):
        path = tmp_path / f"{orientation}.jpg"
        _jpeg_with_orientation(path, upright_rgb, orientation)
        # the file really stores the turned picture: the face is where the hand mapping puts it
        stored = cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)
        assert stored.shape[:2] == ((height, width) if orientation <= 4 else (width, height)), orientation
        (stored_face,) = detector(stored)
        assert _iou(stored_face.box, _STORED_BOX[orientation](truth, width, height)) > 0.5, orientation  # upside down: looser boxes
        # read_image turns it upright: the face at the hand-drawn box again
        image = read_image(path)
        assert image.shape[:2] == upright_rgb.shape[:2], orientation
        faces = detector(image)
        assert len(faces) == 1, orientation
        assert _iou(faces[0].box, truth) > 0.8, f"orientation {orientation}: {faces[0].box}"
        assert abs(faces[0].roll) < 10  # upright, not mirrored into a tilt
        landmarks.append(faces[0].landmarks)
    for orientation, points in enumerate(landmarks[1:], start=2):
        np.testing.assert_allclose(points, landmarks[0], atol=3.0, err_msg=f"orientation {orientation}")
    left_eye, right_eye = landmarks[0][0], landmarks[0][1]
    assert truth[0] < left_eye[0] < right_eye[0] < truth[2]  # not mirrored: the image-left eye comes first


def test_heic_photo_is_read(tmp_path):
    pillow_heif.register_heif_opener()
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (250, 10, 10)
    # HEIF turns pictures by its own 'irot' box, which libheif applies while decoding; the EXIF tag is
    # informational there and pillow-heif reports it as 1, so the picture must not be turned twice.
    Image.fromarray(rgb).save(tmp_path / "phone.heic", quality=95)
    image = read_image(tmp_path / "phone.heic")
    assert image.shape == (40, 60, 3)
    assert image[:, :25, 2].mean() > 200 and image[:, 35:, 2].mean() < 50  # BGR: red is channel 2


def test_gif_reads_as_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((10, 12, 3), value, np.uint8)) for value in (30, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    image = read_image(tmp_path / "a.gif")
    assert image.shape == (10, 12, 3) and abs(int(image.mean()) - 30) <= 2


def test_corrupt_heic_is_one_sentence(tmp_path):
    (tmp_path / "x.heic").write_bytes(b"not a heic file at all")
    with pytest.raises(InputError, match="cannot decode"):
        read_image(tmp_path / "x.heic")


def _write_video_with_tone(path, *, frames: int, fps: int = 25, seconds_audio: float, size=(96, 64), rotation: int = 0):
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        audio = out.add_stream("aac", rate=44100)
        for index in range(frames):
            picture = np.zeros((size[1], size[0], 3), np.uint8)
            picture[:, : size[0] // 4] = 255  # a white stripe on the left shows the stored orientation
            picture[0:8, -8:] = (0, 0, 4 * index)
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="bgr24")))
        out.mux(video.encode(None))
        samples = int(seconds_audio * 44100)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = tone[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))


def _streams(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        codec = video.codec_context.name
        decoded = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_seconds = 0.0
        if audio is not None:
            audio_seconds = sum(frame.samples for frame in container.decode(audio=0)) / audio.codec_context.sample_rate
    return codec, decoded, audio, audio_seconds


def test_h264_writer_keeps_audio_and_frame_count(tmp_path):
    source = tmp_path / "tone.mp4"
    _write_video_with_tone(source, frames=50, seconds_audio=2.0)
    _, source_frames, _, source_audio = _streams(source)
    with VideoSource(source) as video:
        writer = H264VideoWriter(tmp_path / "out.mp4", fps=video.fps, size=(video.width, video.height), audio_from=source)
        written = 0
        for frame in video:
            writer.write(255 - frame)
            written += 1
        writer.close()
    assert written == 50
    codec, frames, audio, seconds = _streams(tmp_path / "out.mp4")
    assert codec == "h264"
    assert frames == source_frames == 50
    assert audio is not None
    assert seconds == pytest.approx(source_audio, abs=0.05)
    assert not list(tmp_path.glob(".*partial*"))


def test_h264_writer_without_audio_pads_odd_sizes(tmp_path):
    writer = H264VideoWriter(tmp_path / "odd.mp4", fps=10, size=(33, 21))
    for _ in range(4):
        writer.write(np.full((21, 33, 3), 128, np.uint8))
    writer.close()
    codec, frames, audio, _ = _streams(tmp_path / "odd.mp4")
    assert (codec, frames, audio) == ("h264", 4, None)


def test_rotated_phone_video_is_read_upright(tmp_path):
    _write_video_with_tone(tmp_path / "phone.mp4", frames=3, seconds_audio=0.2, rotation=90)
    with VideoSource(tmp_path / "phone.mp4") as video:
        frame = next(iter(video))
    assert (video.width, video.height) == (64, 96)
    # stored: white stripe on the left; 90 degrees counter-clockwise display rotation puts it at the bottom
    assert frame[-20:].mean() > 200 and frame[:60].mean() < 60


def test_h264_writer_keeps_the_pictures_colours_and_detail(tmp_path):
    """The frames handed to the encoder as 4:2:0 planes decode to the picture as closely as FFmpeg's own
    conversion of BGR frames does: same colour matrix and range (a wrong one shifts every colour by tens of
    grey levels) and no lost detail."""
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (320, 180), interpolation=cv2.INTER_CUBIC)
    frames = [np.roll(smooth, 4 * i, axis=1) for i in range(6)]
    for frame in frames:
        cv2.rectangle(frame, (40, 40), (120, 100), (255, 190, 40), -1)
        cv2.putText(frame, "mesh", (150, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (20, 20, 230), 2)
    writer = H264VideoWriter(tmp_path / "out.mp4", fps=10, size=(320, 180))
    for frame in frames:
        writer.write(frame)
    writer.close()
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = [picture.to_ndarray(format="bgr24") for picture in container.decode(video=0)]
    # FFmpeg's conversion of the same frames, through the same encoder settings
    reference_path = tmp_path / "bgr.mp4"
    with av.open(str(reference_path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"crf": "20", "preset": "superfast"}
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="bgr24")
            picture.pts = index
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    with av.open(str(reference_path)) as container:
        reference = [picture.to_ndarray(format="bgr24") for picture in container.decode(video=0)]

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))

    assert len(decoded) == len(reference) == len(frames)
    ours = np.mean([psnr(d, f) for d, f in zip(decoded, frames)])
    theirs = np.mean([psnr(d, f) for d, f in zip(reference, frames)])
    assert ours > 28 and ours > theirs - 0.3  # measured 30.9 and 30.6 dB; one pixel's chroma per block: 28.5
    for d, f in zip(decoded, frames):
        assert np.abs(d.reshape(-1, 3).mean(0) - f.reshape(-1, 3).mean(0)).max() < 1.5


@pytest.mark.parametrize("size", [(64, 48), (34, 22)])
def test_yuv420p_planes_are_ffmpegs_up_to_rounding(size):
    """The planes handed to the encoder: FFmpeg's BGR conversion's to within a grey level in luma and to over
    45 dB in chroma (the two average each 2x2 block's chroma with slightly different filters)."""
    width, height = size
    rng = np.random.default_rng(1)
    frame = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), size, interpolation=cv2.INTER_LINEAR)
    ours = bgr_to_yuv420p(frame)
    theirs = av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p").to_ndarray()
    assert ours.shape == theirs.shape == (height * 3 // 2, width) and ours.dtype == np.uint8
    luma = width * height
    assert np.abs(ours.reshape(-1)[:luma].astype(int) - theirs.reshape(-1)[:luma]).max() <= 1
    chroma_error = np.mean((ours.reshape(-1)[luma:].astype(float) - theirs.reshape(-1)[luma:]) ** 2)
    assert 10 * np.log10(255.0**2 / max(chroma_error, 1e-12)) > 45
