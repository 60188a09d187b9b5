"""`SimulatorProcess`: run `qsensor-sim` as a child process and hand out its port path.

A separate process keeps the simulator's timing independent of whatever the caller's threads
do, and makes unplugging, SIGTERM and restarts real.
"""

from __future__ import annotations

import csv
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from qsensor_core.processes import stop_process

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

# keyword -> CLI option; booleans map to --x / --no-x
_VALUE_OPTIONS = (
    "mode",
    "tag",
    "adc_rate",
    "averaging",
    "baud",
    "serial_number",
    "preamble",
    "ppm",
    "bench_speedup",
    "time_scale",
    "garbage_rate",
    "unplug_after",
    "unplug_for",
    "truth_log",
    "state",
    "seed",
)
_FLAG_OPTIONS = ("temp", "vin", "quiet_banner")


class SimulatorError(RuntimeError):
    pass


def _cli_args(options: dict[str, object]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name in _FLAG_OPTIONS:
            args.append(flag if value else "--no-" + flag[2:])
        elif name in _VALUE_OPTIONS:
            args += [flag, str(value)]
        else:
            raise TypeError(f"unknown simulator option {name!r}")
    return args


class SimulatorProcess:
    """Context manager: `with SimulatorProcess(mode="polled", tag="B") as sim: sim.link`.

    `link` defaults to a fresh path in a private temporary directory. Options are the
    `qsensor-sim` options with underscores (`time_scale=0.1`, `temp=False`, ...).
    """

    def __init__(self, link: str | Path | None = None, **options: object) -> None:
        self._args = _cli_args(options)
        self._tmpdir: Path | None = None  # ours: made on start, removed on stop
        if link is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="qsensor-sim-"))
            link = self._tmpdir / "ttyQ"
        self.link = str(link)
        truth = options.get("truth_log")
        self.truth_log: Path | None = Path(str(truth)) if truth is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None  # a file: unlike a pipe it never blocks the child

    def start(self) -> SimulatorProcess:
        """Start (or, after `stop`, restart) the simulator and wait for its link."""
        if self._tmpdir is not None:
            self._tmpdir.mkdir(exist_ok=True)
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed on exit or restart)
        cmd = [sys.executable, "-m", "qsensor_core.simulator", "--link", self.link, *self._args]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr)
        first = self._read_first_line(STARTUP_TIMEOUT_S)
        if first != self.link:
            self.stop()
            err = self.stderr()
            self._stderr.close()
            raise SimulatorError(f"qsensor-sim did not start (got {first!r}): {err}")
        return self

    def _read_first_line(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace").strip()

    def stderr(self) -> str:
        """What the simulator last started wrote to stderr so far."""
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def read_truth(self) -> list[dict[str, str]]:
        """Rows of the truth log so far (complete lines only)."""
        if self.truth_log is None:
            raise SimulatorError("no truth_log was configured")
        if not self.truth_log.exists():
            return []
        text = self.truth_log.read_text(encoding="ascii")
        complete = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(complete.splitlines()))

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not exit; returns the exit code."""
        proc = self._proc
        if proc is not None:
            stop_process(proc, timeout)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        return None if proc is None else proc.returncode

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
