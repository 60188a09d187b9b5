"""Exceptions of the recording package, shaped so an API can map them to HTTP answers."""

from __future__ import annotations

from pathlib import Path


class RecordingError(Exception):
    """Base of every recording error."""


class DiskFullError(RecordingError):
    """Not enough free space to start (or keep) recording; an API answers 507."""

    def __init__(self, path: Path, free_bytes: int, min_free_bytes: int) -> None:
        self.path = path
        self.free_bytes = free_bytes
        self.min_free_bytes = min_free_bytes
        super().__init__(
            f"not enough free space on {path}: {free_bytes} bytes free, "
            f"{min_free_bytes} bytes required"
        )


class RecorderStopped(RecordingError):
    """The recorder no longer accepts rows (stopped on request, disk full or error)."""


class NotFound(RecordingError, KeyError):
    """No such session, chunk or file (also for ids that are not well formed)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "not found"


class InvalidName(RecordingError, ValueError):
    """A file name outside the allow-list (path traversal, open chunk, unknown file)."""


class OffsetOutOfRange(RecordingError, ValueError):
    """A tail read from past the end of a chunk (an API answers 416)."""


class ManifestError(RecordingError):
    """A manifest that is missing, unreadable or inconsistent."""


class ChunkFormatError(RecordingError):
    """A chunk file that does not start with this format's header."""
