"""Serial port discovery and validation of port names given over HTTP."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from serial.tools import list_ports

from qsensor_pi.errors import InvalidArgument, NotFound

BY_ID_DIR = Path("/dev/serial/by-id")
_PORT_PATTERN = re.compile(r"^/[A-Za-z0-9._:+@/-]{1,200}$")
# Serial devices only: opening an arbitrary character device can have side effects (a
# watchdog reboots the Pi when its device is closed), so the resolved target must be one.
_SERIAL_DEVICE = re.compile(
    r"^/dev/(tty(USB|ACM|S|AMA|SC|XRUSB|THS|mxc|O|LP)\d+|pts/\d+|rfcomm\d+)$"
)


@dataclass(frozen=True, slots=True)
class PortInfo:
    port: str  # the name to connect with: stable /dev/serial/by-id/... when there is one
    device: str
    description: str
    hwid: str


def _by_id_names() -> dict[str, str]:
    """Real device path -> its stable by-id symlink (survives re-enumeration of USB)."""
    names: dict[str, str] = {}
    if BY_ID_DIR.is_dir():
        for link in sorted(BY_ID_DIR.iterdir()):
            names.setdefault(os.path.realpath(link), str(link))
    return names


def list_serial_ports() -> list[PortInfo]:
    by_id = _by_id_names()
    found = []
    for p in list_ports.comports():
        real = os.path.realpath(p.device)
        found.append(PortInfo(by_id.get(real, p.device), p.device, p.description, p.hwid))
    return sorted(found, key=lambda info: info.port)


def check_port(port: str) -> str:
    """A port named over HTTP must be (a link to) a serial device; no other file is opened."""
    if not _PORT_PATTERN.fullmatch(port) or "/../" in f"{port}/":
        raise InvalidArgument(f"not a serial port path: {port!r} (e.g. /dev/ttyUSB0)")
    target = os.path.realpath(port)
    try:
        mode = os.stat(target).st_mode
    except OSError as exc:
        raise NotFound(f"no such serial port: {port}") from exc
    if not stat.S_ISCHR(mode) or not _SERIAL_DEVICE.fullmatch(target):
        raise InvalidArgument(f"{port} ({target}) is not a serial device")
    return port
