"""The one clock source everything stamps with.

Tests and drills can make a host behave like an unsynchronised Pi through environment
variables, so every timestamp the service writes goes through `Clock`, never `time` directly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Clock:
    """Wall and monotonic time, optionally offset, drifting and stepped like a real bad clock.

    `drift_ppm` makes both clocks run fast (positive) or slow; `step_s` is added to the wall
    clock once `step_after_s` seconds of real time have passed since the clock was created.
    """

    offset_s: float = 0.0
    drift_ppm: float = 0.0
    step_after_s: float | None = None
    step_s: float = 0.0
    _origin_mono_ns: int = field(default_factory=time.monotonic_ns, repr=False)
    _origin_wall_ns: int = field(default_factory=time.time_ns, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Clock:
        env = os.environ if environ is None else environ
        step_after = env.get("QSENSOR_CLOCK_STEP_AFTER_S")
        return cls(
            offset_s=float(env.get("QSENSOR_CLOCK_OFFSET_S", "0") or 0),
            drift_ppm=float(env.get("QSENSOR_CLOCK_DRIFT_PPM", "0") or 0),
            step_after_s=float(step_after) if step_after else None,
            step_s=float(env.get("QSENSOR_CLOCK_STEP_S", "0") or 0),
        )

    @property
    def is_real(self) -> bool:
        return not (self.offset_s or self.drift_ppm or self.step_s)

    def _scaled_elapsed_ns(self, real_mono_ns: int) -> int:
        elapsed = real_mono_ns - self._origin_mono_ns
        return elapsed + int(elapsed * self.drift_ppm / 1e6)

    def monotonic_ns(self) -> int:
        real = time.monotonic_ns()
        if not self.drift_ppm:
            return real
        return self._origin_mono_ns + self._scaled_elapsed_ns(real)

    def wall_ns(self) -> int:
        if self.is_real:
            return time.time_ns()
        real_mono = time.monotonic_ns()
        wall = self._origin_wall_ns + self._scaled_elapsed_ns(real_mono)
        wall += int(self.offset_s * 1e9)
        if self.step_after_s is not None and (
            real_mono - self._origin_mono_ns >= self.step_after_s * 1e9
        ):
            wall += int(self.step_s * 1e9)
        return wall

    def now(self) -> tuple[int, int]:
        """(monotonic_ns, wall_ns) read together, for stamping one event."""
        return self.monotonic_ns(), self.wall_ns()


def iso_utc(wall_ns: int) -> str:
    """UTC ISO-8601 with microseconds and `+00:00`, the recording format's timestamp."""
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    return stamp.isoformat(timespec="microseconds")


SYSTEM_CLOCK = Clock()
