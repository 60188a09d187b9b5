"""Recent readings kept in memory for `/latest`, `/recent` and the live views."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from qsensor_core.sensor.models import Reading


class ReadingRing:
    """A time-bounded ring of readings, appended on the driver thread, read on the loop."""

    def __init__(self, window_s: float = 300.0, max_rows: int = 200_000) -> None:
        self._window_ns = int(window_s * 1e9)
        self._rows: deque[Reading] = deque(maxlen=max_rows)
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Readings received since the service started (not only those still held)."""
        return self._count

    def add(self, reading: Reading) -> None:
        with self._lock:
            self._rows.append(reading)
            self._count += 1
            horizon = reading.mono_ns - self._window_ns
            while self._rows and self._rows[0].mono_ns < horizon:
                self._rows.popleft()

    def latest(self) -> Reading | None:
        with self._lock:
            return self._rows[-1] if self._rows else None

    def since(self, mono_ns: int) -> list[Reading]:
        with self._lock:
            return [r for r in self._rows if r.mono_ns >= mono_ns]


def reading_json(reading: Reading) -> dict[str, Any]:
    """The reading as the API shows it: field names of the existing Cockpit integration."""
    return {
        "timestamp": reading.timestamp,
        "sensor_id": reading.sensor_id,
        "mode": reading.mode,
        "value": reading.value,
        "TempC": reading.temp_c,
        "Vin": reading.vin,
        "seq": reading.seq,
        "pi_monotonic_ns": reading.mono_ns,
    }


def datalake_frames(reading: dict[str, Any]) -> list[str]:
    """`name=value` text frames (from `reading_json`) for Cockpit's WebSocket data lake."""
    frames = [f"qsensor_value={reading['value']}"]
    if reading.get("TempC") is not None:
        frames.append(f"qsensor_temp={reading['TempC']}")
    if reading.get("Vin") is not None:
        frames.append(f"qsensor_vin={reading['Vin']}")
    return frames
