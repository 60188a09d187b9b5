"""`qsensor-pi`: the recording service on the vehicle's Raspberry Pi (a BlueOS extension)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qsensor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
