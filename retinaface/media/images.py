"""Reading still and animated images upright (EXIF, HEIC/HEIF, GIF/WebP, 16-bit, float) as 8-bit BGR arrays."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..utils.native import native_stderr_silenced

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm",
    ".gif", ".heic", ".heif", ".avif",
}


class ImageRangeWarning(UserWarning):
    """A float image whose values are not in [0, 1] (read as 0-255 instead)."""


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Normalise an image array to ``ndarray[H, W, 3]`` uint8 BGR.

    Accepts grayscale (``H x W`` or ``H x W x 1``), BGR and BGRA; uint8, uint16 (scaled by 1/257)
    and float in [0, 1]. Float images whose largest finite value exceeds 1.5 hold 0-255 values (e.g.
    float32 TIFFs written from 8-bit data); they are read as such, with an :class:`ImageRangeWarning`.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a NumPy image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"unsupported image shape {image.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image has zero size {image.shape}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        finite = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max())
        scale = 255.0
        if peak > 1.5:  # 0-255 data stored as floats; clipping to [0, 1] would turn it white
            warnings.warn(
                f"float image with values up to {peak:g} read as 0-255 (expected 0-1)", ImageRangeWarning, stacklevel=2
            )
            scale = 1.0
        image = ((finite * scale).clip(0.0, 255.0) + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"unsupported image dtype {image.dtype}; expected uint8, uint16 or float")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``ndarray[H, W, 3]`` uint8 BGR (grayscale, RGBA and 16-bit converted), upright:
    turned by its EXIF orientation as viewers show it. HEIC/HEIF/GIF go through Pillow (first frame)."""
    from .images import (
        PILLOW_EXTENSIONS,
        apply_exif_orientation,
        exif_orientation,
        read_image_frames,
    )

    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if not path.is_file():
        raise InputError(f"input is not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"input is an empty (0-byte) file: {path}")
    image = None
    if path.suffix.lower() not in PILLOW_EXTENSIONS:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            with native_stderr_silenced():
                # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores the EXIF orientation: applied below.
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is not None:
            image = apply_exif_orientation(image, exif_orientation(path))
    if image is None:  # formats OpenCV's wheels do not decode, or files it cannot read
        try:
            image = read_image_frames(path, max_frames=1)[0]
        except ValueError as exc:  # one sentence from the Pillow path
            raise InputError(str(exc)) from None
        except IndexError:
            raise InputError(f"cannot decode {path} as an image (no frames)") from None
    return as_bgr_uint8(image)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by extension), sorted by name."""
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in folder {folder}")
    return images


EXIF_ORIENTATION_TAG = 0x0112


PILLOW_EXTENSIONS = {".gif", ".heic", ".heif", ".avif"}
"""Still-image formats decoded through Pillow (OpenCV's wheels lack HEIF and read one GIF frame)."""


ANIMATED_EXTENSIONS = {".gif", ".webp"}


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:  # HEIC stays unsupported; read_image_frames says so in one sentence
        return
    pillow_heif.register_heif_opener()


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation tag (1-8) of an image file, 1 when absent or unreadable.

    Reads only the file's header (Pillow opens lazily), so it costs little next to decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Only the header is read, so Pillow's decompression-bomb warning about the pixel count is moot.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1  # beyond 179 megapixels Pillow refuses even the header: such images are read as stored
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image as stored (``ndarray[H, W, ...]``) into the upright frame its EXIF ``orientation`` asks
    for: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
    counter-clockwise (the TIFF/EXIF 2.3 definitions); 1 or unknown values return ``image`` unchanged."""
    if orientation == 2:
        return np.ascontiguousarray(image[:, ::-1])
    if orientation == 3:
        return np.ascontiguousarray(image[::-1, ::-1])
    if orientation == 4:
        return np.ascontiguousarray(image[::-1])
    if orientation == 5:
        return np.ascontiguousarray(np.swapaxes(image, 0, 1))
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return np.ascontiguousarray(np.swapaxes(image, 0, 1)[::-1, ::-1])
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def _pil_to_array(frame) -> np.ndarray:
    """Pillow image -> ``ndarray`` in OpenCV channel order (BGR/BGRA, or gray), before ``as_bgr_uint8``."""
    if frame.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(frame.convert("I;16"), dtype=np.uint16)
    if frame.mode == "L":
        return np.asarray(frame)
    has_alpha = frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info)
    array = np.asarray(frame.convert("RGBA" if has_alpha else "RGB"))
    return cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA if has_alpha else cv2.COLOR_RGB2BGR)


def read_image_frames(path: str | os.PathLike, *, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode an image file with Pillow into its frames, upright, each ``ndarray[H, W, C]`` (BGR/BGRA or gray,
    uint8/uint16): one frame for stills (HEIC/HEIF included), every frame of an animated GIF/WebP.

    Raises ``ValueError`` with one sentence when the file cannot be decoded.
    """
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() in (".heic", ".heif", ".avif"):
        _register_heif()
    try:
        with Image.open(path) as image:
            orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            frames = []
            for frame in ImageSequence.Iterator(image):
                frames.append(apply_exif_orientation(_pil_to_array(frame), orientation))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except UnidentifiedImageError:
        hint = " (install pillow-heif for HEIC/HEIF)" if path.suffix.lower() in (".heic", ".heif") else ""
        raise ValueError(f"cannot decode {path} as an image (corrupt or not an image file){hint}") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{path} has more pixels than Pillow decodes safely (Image.MAX_IMAGE_PIXELS)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(f"cannot decode {path} as an image ({str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    return frames


def is_animated(path: str | os.PathLike) -> bool:
    """Whether an image file holds more than one frame (animated GIF/WebP)."""
    if Path(path).suffix.lower() not in ANIMATED_EXTENSIONS:
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:  # undecodable: the regular reader reports it
        return False


def frame_durations_ms(path: str | os.PathLike) -> int:
    """Display time of an animation's first frame, milliseconds (100 when not recorded)."""
    from PIL import Image

    with Image.open(path) as image:
        return int(image.info.get("duration") or 100)
