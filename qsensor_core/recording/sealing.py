"""Turning an open chunk into a sealed one: cut any torn tail, fsync, rename, describe.

Used by the recorder (every roll, stop and disk-full stop) and by crash recovery, so a sealed
`chunk_NNNNN.csv` always ends with a complete line and its manifest entry matches its bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from qsensor_core.recording.csv_format import HEADER_BYTES, ChunkTally, scan_chunk
from qsensor_core.recording.errors import ChunkFormatError
from qsensor_core.recording.fsutil import fsync_dir
from qsensor_core.recording.layout import chunk_name, open_chunk_name
from qsensor_core.recording.manifest import ChunkInfo


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts = []
    offset = 0
    while offset < size:
        block = os.pread(fd, size - offset, offset)
        if not block:
            break
        parts.append(block)
        offset += len(block)
    return b"".join(parts)


def _tally_for(data: bytes, expected: ChunkTally | None) -> ChunkTally:
    """The writer's own tally when the file agrees with it, else a recount from the bytes."""
    if (
        expected is not None
        and expected.size_bytes == len(data)
        and expected.rows == data.count(b"\n") - 1
    ):
        return expected
    return scan_chunk(data).tally


def seal_open_chunk(
    session_dir: Path, index: int, *, expected: ChunkTally | None = None
) -> ChunkInfo | None:
    """Seal `chunk_<index>.csv.open` and describe it; None when it was discarded as empty.

    A chunk whose header never reached the disk completely holds no row and is deleted.
    A torn last line (no LF) is cut off and counted in `torn_bytes_dropped`. `expected` is
    the writer's tally, used when the file agrees with it (no need to parse every row).
    """
    open_path = session_dir / open_chunk_name(index)
    sealed_path = session_dir / chunk_name(index)
    fd = os.open(open_path, os.O_RDWR)
    try:
        data = _read_all(fd)
        if not data.startswith(HEADER_BYTES):
            if HEADER_BYTES.startswith(data):
                os.unlink(open_path)
                fsync_dir(session_dir)
                return None
            raise ChunkFormatError(f"{open_path} does not start with the chunk header")
        complete = data.rfind(b"\n") + 1
        torn = len(data) - complete
        if torn:
            os.ftruncate(fd, complete)
            data = data[:complete]
            expected = None
        os.fsync(fd)
    finally:
        os.close(fd)
    if sealed_path.exists():
        raise ChunkFormatError(f"cannot seal {open_path}: {sealed_path.name} already exists")
    os.rename(open_path, sealed_path)
    fsync_dir(session_dir)
    return ChunkInfo.from_tally(
        index, _tally_for(data, expected), sha256=hashlib.sha256(data).hexdigest(), torn_bytes=torn
    )


def describe_sealed_chunk(session_dir: Path, index: int) -> ChunkInfo:
    """Describe a sealed chunk from its bytes (a chunk the manifest does not list yet)."""
    path = session_dir / chunk_name(index)
    data = path.read_bytes()
    scan = scan_chunk(data)
    if not scan.has_header or scan.torn_bytes:
        raise ChunkFormatError(f"{path} is not a complete chunk (header or last line missing)")
    return ChunkInfo.from_tally(index, scan.tally, sha256=hashlib.sha256(data).hexdigest())
