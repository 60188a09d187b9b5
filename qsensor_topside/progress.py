"""A one-line catch-up progress bar on a terminal (stderr only, only when it is a TTY)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from qsensor_topside.bwlimit import format_bytes

MIN_BACKLOG = 4 * 2**20  # smaller backlogs clear within seconds; no bar for them


@dataclass
class _Episode:
    start_received: int
    start_time: float


class CatchUpBar:
    """Shows progress while a backlog is fetched; the logging handler below keeps it tidy."""

    def __init__(
        self, stream: TextIO, *, width: int = 28, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.width = width
        self._clock = clock
        self._episode: _Episode | None = None
        self._text = ""
        self._visible = False

    def update(self, backlog: int, received: int, rate: float) -> None:
        """Redraw from the daemon's totals: backlog bytes, bytes received, current rate."""
        if self._episode is None:
            if backlog < MIN_BACKLOG:
                return
            self._episode = _Episode(received, self._clock())
        done = received - self._episode.start_received
        if backlog <= 0:
            seconds = self._clock() - self._episode.start_time
            self._episode = None
            self.clear()
            self._text = ""
            self.stream.write(f"caught up: {format_bytes(done)} in {seconds:.0f} s\n")
            self.stream.flush()
            return
        self._draw(self.line(done, backlog, rate))

    def line(self, done: int, backlog: int, rate: float) -> str:
        total = done + backlog
        fraction = done / total if total else 1.0
        filled = int(fraction * self.width)
        eta = f"ETA {_clock_text(backlog / rate)}" if rate > 0 else "ETA --:--"
        return (
            f"catch-up [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} "
            f"{format_bytes(done)} / {format_bytes(total)}  {format_bytes(rate)}/s  {eta}"
        )

    def clear(self) -> None:
        if self._visible:
            self.stream.write("\r" + " " * len(self._text) + "\r")
            self.stream.flush()
            self._visible = False

    def redraw(self) -> None:
        if self._text and not self._visible:
            self.stream.write(self._text)
            self.stream.flush()
            self._visible = True

    def _draw(self, text: str) -> None:
        self.clear()
        self._text = text
        self.redraw()


class BarAwareHandler(logging.StreamHandler):
    """Log lines go above the bar instead of through it."""

    def __init__(self, bar: CatchUpBar) -> None:
        super().__init__(bar.stream)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.clear()
        super().emit(record)
        self.bar.redraw()


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
