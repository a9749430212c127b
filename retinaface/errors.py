"""The errors a user can act on: one hierarchy, each message one sentence that names the file or option.

Commands catch :class:`RetinaFaceError` once, print its message and exit non-zero; anything else is a bug.
Every class derives from ``ValueError`` so that code written against the standard exceptions still works.
"""

from __future__ import annotations


class RetinaFaceError(ValueError):
    """Base of every error caused by what the user gave: the message is one sentence."""


class InputError(RetinaFaceError):
    """Bad user input: missing, unreadable, unsupported, or an output that must not be created."""


class OutputError(RetinaFaceError):
    """An output could not be written completely (disk full, quota, I/O error); the old file is kept."""


class WeightsError(RetinaFaceError):
    """A weights name or file that cannot be used, with a sentence saying why."""


class ConfigError(RetinaFaceError):
    """An unknown preset, an unknown key or a value of the wrong type."""


class AnnotationError(RetinaFaceError):
    """A training annotation problem; the message names the file and line."""


class WiderFormatError(RetinaFaceError):
    """A ground-truth or prediction file that does not follow the WIDER format (message names file and line)."""
