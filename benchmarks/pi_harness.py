"""The pieces the Pi-service benchmarks share: the real `qsensor-pi` process and CPU counters.

The service runs as its own process (as on the vehicle) so its CPU time can be read from
/proc without the benchmark's own work in it, and the simulator runs as another one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from qsensor_core.processes import stop_process

STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does, so every `with` stops what it started."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class BenchError(RuntimeError):
    """A part of the benchmark's set-up failed (the figures would mean nothing)."""


def machine() -> str:
    """Cores and load: other work on the machine skews latencies (CPU times much less)."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS_PER_S


def child_pid(marker: str) -> int:
    """The pid of this process's child whose command line contains `marker`."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    return int(pid)
    raise BenchError(f"no child process with {marker!r} in its command line")


class CpuMeter:
    """CPU use of some processes over a window, as a percentage of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._t0 = time.monotonic()

    def percent(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        return {
            name: 100.0 * (cpu_seconds(pid) - self._start[name]) / elapsed
            for name, pid in self._pids.items()
        }


class PiService:
    """`python -m qsensor_pi serve` on 127.0.0.1 (a free port), connected to `serial`.

    Its output goes to files (a full pipe would stall it); `stop()` sends SIGTERM, then
    SIGKILL after a grace period. It runs in its own session, so a Ctrl-C at the terminal
    reaches only the benchmark, whose clean-up stops it; if the benchmark is killed outright
    the kernel sends it SIGTERM.
    """

    def __init__(self, data_dir: Path, serial: str) -> None:
        self._args = ["--data", str(data_dir), "--serial", serial]
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BenchError("qsensor-pi is not running")
        return self._proc.pid

    def start(self) -> PiService:
        cmd = [sys.executable, "-m", "qsensor_pi", "serve", "--host", "127.0.0.1", "--port", "0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QSENSOR_CLOCK_")}
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [*cmd, *self._args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            self.url = self._wait_for_url()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_url(self) -> str:
        assert self._proc is not None and self._out is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and self._proc.poll() is None:
            for line in self.output().splitlines():
                if "listening on http://" in line:
                    return line.rsplit(" ", 1)[-1]
            time.sleep(0.05)
        raise BenchError(f"qsensor-pi did not start: {self.output()[-2000:]}")

    def output(self) -> str:
        """Everything the service printed so far (stdout and stderr)."""
        if self._out is None or self._out.closed:
            return ""
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def wait_connected(self, client: httpx.Client, timeout_s: float = 30.0) -> dict[str, object]:
        """The service's status once it has connected to the sensor at start-up."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            status = client.get("/status").json()
            if status["state"] == "idle" and status["config"] is not None:
                return status
            time.sleep(0.1)
        raise BenchError(f"qsensor-pi did not connect to the sensor: {status}")

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, STOP_TIMEOUT_S)
        if self._out is not None:
            self._out.close()

    def __enter__(self) -> PiService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) of `values`, NaN when there are none."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
