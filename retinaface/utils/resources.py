"""Files shipped inside the package (weights, mesh assets, sample photo), found with ``importlib.resources``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(package: str, relative: str) -> Path:
    """Filesystem path of ``relative`` inside the installed ``package`` (e.g. ``"retinaface.mesh"``).

    pip installs wheels unpacked, so package data are plain files; OpenCV and NumPy need their paths.
    """
    return Path(str(files(package).joinpath(relative)))
