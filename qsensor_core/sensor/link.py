"""The open serial port with line framing: reads, writes and waits for the device's answers.

The device ends lines with CRLF, but several prompts end without any line break; the link
exposes that unterminated tail so the driver can answer it, and never passes half a line on
as a whole one (the device echoes an answer onto its prompt's line, which then completes).
Every received line goes to the sink exactly once, stamped on arrival; lines of the current
exchange are also kept so the driver can wait for a particular answer.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections import deque
from collections.abc import Callable

import serial

from qsensor_core.clock import Clock

MAX_LINE_BYTES = 4096  # a longer run without a line break is noise: emit it so it is counted
PATH_CHECK_INTERVAL_S = 0.5

LineSink = Callable[[str, int, int], None]  # (line, mono_ns, wall_ns)
Match = Callable[[str], bool]


class LinkLost(Exception):
    """The port failed: unplugged, vanished, or closed under us."""


def decode_line(raw: bytes) -> str:
    """ASCII text; other bytes become visible escapes (`\\xNN`) that no grammar accepts."""
    return raw.decode("ascii", errors="backslashreplace")


class LineBuffer:
    """Accumulates bytes; `feed` returns complete lines without their LF / CRLF."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._tail = bytearray()
        self._max = max_line_bytes
        self._lines = 0  # complete lines so far: a new one restarts the tail
        self._mark = (0, 0)  # (lines, tail length) when the tail was last looked at

    def feed(self, data: bytes) -> list[str]:
        self._tail += data
        *complete, rest = self._tail.split(b"\n")
        self._tail = bytearray(rest)
        lines = [decode_line(raw.removesuffix(b"\r")) for raw in complete]
        while len(self._tail) > self._max:
            lines.append(decode_line(bytes(self._tail[: self._max])))
            del self._tail[: self._max]
        self._lines += len(lines)
        return lines

    @property
    def pending(self) -> str:
        """The partial line received so far (a prompt the device printed without CRLF)."""
        return decode_line(bytes(self._tail))

    @property
    def unseen_pending(self) -> str:
        """The part of the partial line that arrived after the last `mark`."""
        lines, length = self._mark
        start = length if lines == self._lines else 0
        return decode_line(bytes(self._tail[start:]))

    def mark(self) -> None:
        """The partial line so far has been acted on: it must not answer anything again."""
        self._mark = (self._lines, len(self._tail))

    def take_pending(self) -> str:
        """Consume the partial line as a whole one: what the device prints next is a new line."""
        text = self.pending
        self._tail.clear()
        self._lines += 1
        return text


class SerialLink:
    """One open port. Raises `LinkLost` on any I/O error or when the device path changes."""

    def __init__(self, path: str, baud: int, *, clock: Clock, sink: LineSink, read_s: float):
        self.path = path
        self._clock = clock
        self._sink = sink
        self._read_s = read_s
        self._buffer = LineBuffer()
        self._unexamined: deque[str] = deque(maxlen=4096)
        try:
            # Reads never block in pyserial: `pump` waits with select, so the port is never
            # reconfigured per read (assigning `Serial.timeout` redoes flock and tcsetattr).
            self._port = serial.Serial(path, baud, timeout=0, write_timeout=2.0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open {path}: {exc}") from exc
        self._fd = self._port.fileno()
        self._rdev = _rdev_of_fd(self._fd)
        self._next_path_check = time.monotonic() + PATH_CHECK_INTERVAL_S

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):  # device may be gone
            self._port.close()

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(f"write failed: {exc}") from exc

    def pump(self, timeout_s: float | None = None) -> list[str]:
        """Wait up to `timeout_s` for input and take all of it; complete lines go to the sink
        and are returned."""
        wait_s = self._read_s if timeout_s is None else max(timeout_s, 0.0)
        try:
            ready = select.select([self._fd], [], [], wait_s)[0]
            # Readable with nothing waiting is a hang-up: read(1) then raises.
            data = self._port.read(max(1, self._port.in_waiting)) if ready else b""
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(f"read failed: {exc}") from exc
        if not data:
            self._check_path()
            return []
        mono, wall = self._clock.now()
        lines = self._buffer.feed(data)
        for line in lines:
            self._unexamined.append(line)
            self._sink(line, mono, wall)
        return lines

    def begin_exchange(self) -> None:
        """Forget earlier lines: only what arrives from now on can answer the next command."""
        self._unexamined.clear()
        self._buffer.mark()

    def expect(
        self, match: Match, timeout_s: float, *, partial: Match | None = None, take: bool = False
    ) -> str | None:
        """The first line of this exchange that `match`es, or None after `timeout_s`.

        `partial` is tested on the unterminated tail, for prompts printed without a line
        break. A match there is marked as seen, so the device's echo of the answer completes
        the prompt's line; with `take` it is consumed as a whole line at once instead (the
        menu prompt: what follows a selection is a new line, echoed or not).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            while self._unexamined:
                line = self._unexamined.popleft()
                if match(line):
                    return line
            pending = self._buffer.unseen_pending
            if partial is not None and pending and partial(pending):
                if not take:
                    self._buffer.mark()
                    return pending
                line = self._buffer.take_pending()
                self._sink(line, *self._clock.now())
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.pump(min(remaining, self._read_s))

    def quiet_for(self, quiet_s: float) -> bool:
        """True when no text arrives for `quiet_s` (the device is waiting for input)."""
        deadline = time.monotonic() + quiet_s
        while (remaining := deadline - time.monotonic()) > 0:
            lines = self.pump(min(remaining, self._read_s))
            if any(line.strip() for line in lines) or self._buffer.unseen_pending.strip():
                return False
        return True

    def _check_path(self) -> None:
        """An unplugged USB adapter's node vanishes; a re-created pty gets a new device."""
        now = time.monotonic()
        if now < self._next_path_check:
            return
        self._next_path_check = now + PATH_CHECK_INTERVAL_S
        try:
            rdev = os.stat(self.path).st_rdev
        except OSError as exc:
            raise LinkLost(f"device path vanished: {exc}") from exc
        if self._rdev is not None and rdev != self._rdev:
            raise LinkLost(f"{self.path} now points to another device")


def _rdev_of_fd(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_rdev
    except OSError:
        return None
