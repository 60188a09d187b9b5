"""Names on disk: session ids, chunk file names and the session folder layout.

Every name that reaches a path goes through a strict pattern here, so no caller can build a
path outside `DATA/sessions/<session_id>/`.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from qsensor_core.recording.errors import NotFound

SESSIONS_DIR = "sessions"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"  # flock'ed by the live recorder; recovery leaves locked sessions alone
RESERVE_NAME = ".reserve"  # pre-allocated space, released to write the last manifest
STAGING_PREFIX = ".staging-"  # a session folder being created, renamed once complete
MAX_CHUNK_INDEX = 99_999

SESSION_ID_RE = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{8}")
CHUNK_RE = re.compile(r"chunk_(\d{5})\.csv")
OPEN_CHUNK_RE = re.compile(r"chunk_(\d{5})\.csv\.open")
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def new_session_id(wall_ns: int) -> str:
    """`20261121T120000Z-1a2b3c4d`: sorts by start time, safe in any file system."""
    stamp = datetime.fromtimestamp(wall_ns // 1_000_000_000, tz=UTC).strftime(_STAMP_FORMAT)
    return f"{stamp}-{secrets.token_hex(4)}"


def is_session_id(value: object) -> bool:
    if not isinstance(value, str):
        return False
    match = SESSION_ID_RE.fullmatch(value)
    if match is None:
        return False
    try:
        datetime.strptime(match.group(1), _STAMP_FORMAT)
    except ValueError:
        return False
    return True


def check_session_id(value: object) -> str:
    """The id itself, or NotFound: a malformed id can name no session."""
    if not is_session_id(value):
        raise NotFound(f"no such session: {value!r} is not a session id")
    return value  # type: ignore[return-value]


def session_start_iso(session_id: str) -> str:
    """The UTC start second encoded in a session id, as ISO-8601."""
    stamp = datetime.strptime(check_session_id(session_id)[:16], _STAMP_FORMAT)
    return stamp.replace(tzinfo=UTC).isoformat(timespec="microseconds")


def chunk_name(index: int) -> str:
    return f"chunk_{_check_index(index):05d}.csv"


def open_chunk_name(index: int) -> str:
    return f"{chunk_name(index)}.open"


def _check_index(index: object) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"chunk index must be an integer, not {index!r}")
    if not 0 <= index <= MAX_CHUNK_INDEX:
        raise ValueError(f"chunk index {index} outside 0..{MAX_CHUNK_INDEX}")
    return index


def sessions_root(data_dir: Path) -> Path:
    return Path(data_dir) / SESSIONS_DIR
