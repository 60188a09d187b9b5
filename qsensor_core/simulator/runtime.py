"""Runs the firmware model on a real pseudo-terminal, so a driver opens it like a USB port.

One loop owns everything: it polls the pty master and a signal pipe, feeds received bytes to
the firmware, and writes what the firmware printed once the modelled USB adapter would
deliver it. Output is only written while a client has the port open (like a real adapter,
nothing is kept for a closed port), and each line enters the pty whole, so nothing is torn.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import random
import select
import signal
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qsensor_core.simulator.firmware import DeviceSettings, Firmware, Output
from qsensor_core.simulator.values import USB_TICK_S, UsbLatency, ValueModel, garbage_line

HUP_POLL_S = 0.02  # how often a closed port is checked for a client opening it
ORPHAN_POLL_S = 1.0  # how often the simulator checks that the process that started it lives
BACKLOG_MAX_BYTES = 64 * 1024  # output beyond this, unread by the client, is dropped
TRUTH_HEADER = ("sim_seq", "wall_ns", "mono_ns", "line")


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    link: Path
    time_scale: float = 1.0
    ppm: float = 0.0
    bench_speedup: float = 1.0
    garbage_rate: float = 0.0
    unplug_after: float | None = None
    unplug_for: float | None = None
    truth_log: Path | None = None
    state: Path | None = None
    seed: int | None = None


def load_state(path: Path) -> dict[str, object]:
    """Settings saved by an earlier run (the device's EEPROM), or {} when there are none."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"state file {path} does not hold a JSON object")
    return data


def save_state(path: Path, settings: DeviceSettings) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(settings.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class TruthLog:
    """Every data line the simulator wrote, as written (without CRLF), flushed per line."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w", newline="", encoding="ascii")
        self._csv = csv.writer(self._file)
        self._csv.writerow(TRUTH_HEADER)
        self._file.flush()
        self._seq = 0

    def record(self, line: bytes) -> None:
        wall, mono = time.time_ns(), time.monotonic_ns()
        self._csv.writerow((self._seq, wall, mono, line.rstrip(b"\r\n").decode("ascii")))
        self._file.flush()
        self._seq += 1

    def close(self) -> None:
        self._file.close()


def point_link(link: Path, target: str) -> None:
    """Make `link` a symlink to `target`, replacing an old symlink atomically."""
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def remove_link(link: Path, target: str) -> None:
    """Remove `link` if it still points at our pty (another simulator may own it now)."""
    with contextlib.suppress(OSError):
        if os.readlink(link) == target:
            link.unlink()


class _Port:
    """One pty pair: the master we serve on, the slave path a client opens."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # kept by the pty while the master lives: CR/LF pass unchanged
        self.slave_name = os.ttyname(slave)
        os.close(slave)  # with no client the master reports hang-up, which tells us "closed"
        os.set_blocking(self.master, False)
        self._probe = select.poll()
        self._probe.register(self.master, select.POLLIN)
        self._backlog: deque[tuple[memoryview, bytes | None]] = deque()
        self._backlog_bytes = 0

    def client_open(self) -> bool:
        return not any(ev & select.POLLHUP for _, ev in self._probe.poll(0))

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:  # EIO: the client closed the port
            if exc.errno != errno.EIO:
                raise
            return b""

    def queue(self, data: bytes, line: bytes | None) -> None:
        """Queue bytes for the client; `line` (a data line) is reported once fully written."""
        if self._backlog_bytes + len(data) > BACKLOG_MAX_BYTES:
            return  # the client is not reading; a real adapter drops too
        self._backlog.append((memoryview(data), line))
        self._backlog_bytes += len(data)

    def flush(self, on_line: Callable[[bytes], None]) -> None:
        while self._backlog:
            view, line = self._backlog[0]
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                return
            self._backlog_bytes -= n
            if n < len(view):
                self._backlog[0] = (view[n:], line)
                return
            self._backlog.popleft()
            if line is not None:
                on_line(line)

    def drop_backlog(self) -> None:
        self._backlog.clear()
        self._backlog_bytes = 0

    @property
    def backlogged(self) -> bool:
        return bool(self._backlog)

    def close(self) -> None:
        os.close(self.master)


class Simulator:
    """The device plus its USB adapter and cable, served on a pty until stopped."""

    def __init__(self, settings: DeviceSettings, options: RuntimeOptions) -> None:
        self._options = options
        self._settings = settings
        rng = random.Random(options.seed)
        self._rng = random.Random(rng.getrandbits(64))
        self._values = ValueModel(random.Random(rng.getrandbits(64)), time.monotonic())
        self._usb = UsbLatency(phase_s=self._rng.uniform(0, USB_TICK_S))
        self._truth = TruthLog(options.truth_log) if options.truth_log else None
        self._firmware: Firmware | None = None
        self._port: _Port | None = None
        self._outbox: deque[tuple[float, bytes, bool]] = deque()
        self._stopping = False
        start = time.monotonic()
        after, lasting = options.unplug_after, options.unplug_for
        self._unplug_at = start + after if after is not None else math.inf
        self._replug_at = (
            self._unplug_at + lasting if after is not None and lasting is not None else math.inf
        )

    # --- lifecycle ---------------------------------------------------------------------

    def run(self, on_ready: Callable[[str], None]) -> None:
        """Serve until SIGTERM or SIGINT; `on_ready` gets the link path once it exists."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = signal.set_wakeup_fd(wake_w)
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._plug(time.monotonic())
            on_ready(str(self._options.link))
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(previous)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            self._unplug()
            if self._truth:
                self._truth.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _plug(self, now: float) -> None:
        """Cable in: a new pty, the link pointed at it, the device powered on."""
        self._port = _Port()
        point_link(self._options.link, self._port.slave_name)
        self._firmware = Firmware(
            self._settings,
            self._values,
            time_scale=self._options.time_scale,
            ppm=self._options.ppm,
            bench_speedup=self._options.bench_speedup,
        )
        self._accept(self._firmware.power_on(now))

    def _unplug(self) -> None:
        """Cable out: the port disappears and the device loses power."""
        if self._port is None:
            return
        remove_link(self._options.link, self._port.slave_name)
        self._port.close()
        self._port = None
        self._firmware = None
        self._outbox.clear()

    # --- the loop ------------------------------------------------------------------------

    def _loop(self, wake_fd: int) -> None:
        parent = os.getppid()
        while not self._stopping:
            if os.getppid() != parent:  # the parent died without stopping us (e.g. kill -9)
                break
            now = time.monotonic()
            if now >= self._unplug_at:
                self._unplug_at = math.inf
                self._unplug()
            if now >= self._replug_at:
                self._replug_at = math.inf
                self._plug(now)
            if self._firmware is not None:
                self._accept(self._firmware.run(now))
                self._persist()
            connected = self._deliver(now)
            self._wait(wake_fd, connected)

    def _accept(self, outputs: list[Output]) -> None:
        for out in outputs:
            self._outbox.append((self._usb.deliver_at(out.at), out.data, out.is_data))
            if out.is_data and self._rng.random() < self._options.garbage_rate:
                self._outbox.append((self._usb.deliver_at(out.at), garbage_line(self._rng), False))

    def _deliver(self, now: float) -> bool:
        """Write what is due; returns whether a client has the port open."""
        port = self._port
        due = []
        while self._outbox and self._outbox[0][0] <= now:
            due.append(self._outbox.popleft())
        if port is None:
            return False
        if not port.client_open():
            port.drop_backlog()  # nobody listens: what the device prints now is lost
            return False
        for _, data, is_data in due:
            port.queue(data, data if is_data else None)
        port.flush(self._wrote_line)
        return True

    def _wrote_line(self, line: bytes) -> None:
        if self._truth:
            self._truth.record(line)

    def _persist(self) -> None:
        assert self._firmware is not None
        if self._firmware.settings != self._settings:
            self._settings = self._firmware.settings
            if self._options.state:
                save_state(self._options.state, self._settings)

    def _wait(self, wake_fd: int, connected: bool) -> None:
        now = time.monotonic()
        deadlines = [self._unplug_at, self._replug_at, now + ORPHAN_POLL_S]
        if self._outbox:
            deadlines.append(self._outbox[0][0])
        if self._firmware is not None and (wake := self._firmware.next_wakeup()) is not None:
            deadlines.append(wake)
        port = self._port
        if port is not None and (not connected or port.backlogged):
            deadlines.append(now + HUP_POLL_S)
        timeout = max(0.0, min(deadlines) - now)
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        if port is not None and connected:
            poller.register(port.master, select.POLLIN)
        ready = poller.poll(None if math.isinf(timeout) else math.ceil(timeout * 1000))
        for fd, _ in ready:
            if fd == wake_fd:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_fd, 64)
            elif port is not None and self._firmware is not None:
                data = port.read()
                if data:
                    self._firmware.feed(data, time.monotonic())
