"""Parse and format bandwidth limits the way rclone writes them ("500K", "2M", "0").

Suffixes are binary (K = 1024 bytes/s) and default to K when a bare number is not 0, like
rclone's `--bwlimit`; `0` or `off` means unlimited. Pure functions, no I/O.
"""

from __future__ import annotations

import re

_UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([BKMGT]?)(?:I?B)?(?:/S)?\s*$")


def parse_size(text: str | int, *, default_unit: str = "B") -> int:
    """Bytes from "200M", "1.5G", "4096"; binary suffixes; ValueError with the reason."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    match = _PATTERN.match(text.upper())
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with an optional K, M or G suffix)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit or default_unit])


def parse_bwlimit(text: str | int) -> int:
    """Bytes per second for a `--bwlimit` value; 0 means unlimited."""
    if isinstance(text, str) and text.strip().lower() in {"off", "none", "unlimited"}:
        return 0
    return parse_size(text, default_unit="K")


def format_rate(bytes_per_s: float) -> str:
    """Short human form of a rate, e.g. "488.3 KiB/s"; "unlimited" for 0."""
    if bytes_per_s <= 0:
        return "unlimited"
    return f"{format_bytes(bytes_per_s)}/s"


def format_bytes(n: float) -> str:
    """Short human form of a byte count with binary units."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, index = float(n), 0
    while abs(value) >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.0f} B" if index == 0 else f"{value:.1f} {units[index]}"
