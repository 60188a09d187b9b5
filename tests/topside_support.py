"""Real processes for the topside mirror's end-to-end tests: the Pi service on a simulated
sensor, the mirror daemon, and the checks that the mirrored files equal the Pi's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from qsensor_core.processes import stop_process
from qsensor_core.recording.csv_format import parse_chunk

FAST_SIM = ("--sim-averaging", "5", "--sim-adc-rate", "125", "--sim-time-scale", "0.05")


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Child:
    """A child process whose output goes to a file (never a pipe that could fill up)."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        stop_process(self.proc, 15)
        self._out.close()


class PiService(_Child):
    """`qsensor-pi serve --simulate` on a free port of 127.0.0.1."""

    def __init__(self, data: Path, log: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "qsensor_pi", "serve", "--simulate", "--data", str(data)]
        cmd += ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning", *FAST_SIM, *extra]
        super().__init__(cmd, log)
        line = wait_for(self._listening_line, 30, "qsensor-pi to listen")
        self.port = int(line.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data

    def _listening_line(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"qsensor-pi exited: {self.output()}")
        for line in self.output().splitlines():
            if "listening on http://" in line:
                return line.strip()
        return None

    def start_recording(self, roll_interval_s: float = 2.0, mission: str = "e2e") -> str:
        """Start a session once the simulated sensor is connected; its id."""
        body = {"roll_interval_s": roll_interval_s, "mission": mission}

        def attempt() -> str | None:
            reply = httpx.post(f"{self.url}/record/start", json=body, timeout=10)
            return reply.json()["session_id"] if reply.status_code == 200 else None

        return wait_for(attempt, 30, "the Pi to start recording", interval=0.3)

    def stop_recording(self, session_id: str) -> None:
        reply = httpx.post(f"{self.url}/record/stop", json={"session_id": session_id}, timeout=30)
        reply.raise_for_status()

    def sessions_dir(self) -> Path:
        return self.data / "sessions"

    def kill9(self) -> None:
        children = _children(self.proc.pid)
        super().kill9()
        _end(children)

    def stop(self) -> None:
        children = _children(self.proc.pid)
        super().stop()
        _end(children)


def _children(pid: int) -> list[int]:
    """The service's own children (its simulator), which a killed service leaves behind."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return found


def _end(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 5
    for pid in pids:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


class Daemon(_Child):
    """`qsensor-topside run` for one vehicle, with its status API on a free port."""

    def __init__(
        self, url: str, data: Path, log: Path, *extra: str, name: str = "rov", more: tuple = ()
    ) -> None:
        """One vehicle `name=url`, plus `more` as ((name, url), ...)."""
        self.status_port = free_port()
        self.args = [sys.executable, "-m", "qsensor_topside", "run"]
        for vehicle_name, vehicle_url in ((name, url), *more):
            self.args += ["--vehicle", f"{vehicle_name}={vehicle_url}"]
        self.args += ["--data", str(data), "--status-port", str(self.status_port), *extra]
        self.folder = data / name
        super().__init__(self.args, log)
        wait_for(self._status_or_exit, 20, "the daemon's status API")

    def _status_or_exit(self) -> dict | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"qsensor-topside exited: {self.output()}")
        try:
            return self.status()
        except httpx.HTTPError:
            return None

    def status(self) -> dict:
        reply = httpx.get(f"http://127.0.0.1:{self.status_port}/status", timeout=10)
        reply.raise_for_status()
        return reply.json()

    def vehicle(self, index: int = 0) -> dict:
        return self.status()["vehicles"][index]

    def verified(self) -> int:
        return self.vehicle()["chunks_verified"]


def pi_sessions(pi_sessions_dir: Path) -> dict[str, dict[str, bytes]]:
    """Every sealed file of every session the Pi holds: {session: {name: bytes}}."""
    found = {}
    for folder in sorted(pi_sessions_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            found[folder.name] = {
                p.name: p.read_bytes()
                for p in folder.iterdir()
                if p.name == "manifest.json" or (p.name.startswith("chunk_") and p.suffix == ".csv")
            }
    return found


def mirror_equals_pi(pi_sessions_dir: Path, mirror: Path) -> bool:
    """True once the topside folder holds exactly the Pi's sealed files, byte for byte."""
    expected = pi_sessions(pi_sessions_dir)
    if not mirror.is_dir():
        return False
    held = {
        folder.name: {p.name: p.read_bytes() for p in folder.iterdir()}
        for folder in mirror.iterdir()
        if folder.is_dir()
    }
    return held == expected


def assert_no_duplicate_rows(mirror: Path) -> int:
    """Rows of every session, chunk after chunk, have strictly increasing `seq`; row count."""
    total = 0
    for folder in sorted(p for p in mirror.iterdir() if p.is_dir()):
        seqs = [
            row.seq
            for chunk in sorted(folder.glob("chunk_*.csv"))
            for row in parse_chunk(chunk.read_bytes())
        ]
        assert seqs == sorted(set(seqs)), f"duplicate or reordered rows in {folder.name}"
        total += len(seqs)
    return total


class Watch:
    """Samples the daemon's status in a thread (what the user would have seen)."""

    def __init__(self, daemon: Daemon, interval: float = 0.25) -> None:
        self.daemon = daemon
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.samples.append(self.daemon.vehicle())
            except httpx.HTTPError:
                continue
