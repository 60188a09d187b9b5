"""Recent readings kept in memory for `/latest`, `/recent` and the live views."""

from __future__ import annotations

import threading
from collections import deque

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
