"""`qsensor-pi serve` as a process: --simulate, the one clock from the environment, SIGTERM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from test_pi_harness import ServiceProcess, wait_connected, wait_readings

from qsensor_pi.cli import listen_socket

OFFSET_S = 7200.0  # the service's clock runs two hours ahead of this host's
SIM = ["--simulate", "--sim-averaging", "25", "--sim-time-scale", "0.05"]


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.timeout(90)
def test_simulated_service_stamps_everything_with_its_clock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = ServiceProcess(*SIM, "--data", str(data), env={"QSENSOR_CLOCK_OFFSET_S": "7200"})
    try:
        with service.client() as c:
            wait_connected(c)
            synced = c.get("/api/sync/time").json()
            assert abs(synced["pi_unix_ms"] / 1000 - time.time() - OFFSET_S) < 5
            assert abs(_unix(synced["pi_iso"]) - synced["pi_unix_ms"] / 1000) < 0.001

            started = c.post("/record/start", json={"roll_interval_s": 1}).json()
            assert abs(_unix(started["started_at"]) - time.time() - OFFSET_S) < 5
            wait_readings(c, 3)
            latest = c.get("/latest").json()
            assert abs(_unix(latest["timestamp"]) - time.time() - OFFSET_S) < 5
            marker = c.post(
                "/record/sync-marker",
                json={
                    "session_id": started["session_id"],
                    "sync_id": "00112233-4455",
                    "marker_type": "START",
                },
            ).json()
            assert abs(_unix(marker["timestamp"]) - time.time() - OFFSET_S) < 5
            time.sleep(1.5)
        children = _children(service.proc.pid)
        assert children, "the simulator runs as a child of the service"
    finally:
        service.stop()  # SIGTERM: a clean shutdown seals the recording
    assert not [pid for pid in children if _alive(pid)], "the simulator outlived the service"
    assert service.proc.returncode == 0, "".join(service.output)
    assert any("shutdown complete" in line for line in service.output)
    manifest = json.loads((data / "sessions" / started["session_id"] / "manifest.json").read_text())
    assert manifest["state"] == "stopped" and manifest["totals"]["rows"] > 0
    assert abs(_unix(manifest["stopped_at"]) - time.time() - OFFSET_S) < 10
    assert not (data / "last_port.json").exists()  # a simulator's pty is not remembered


@pytest.mark.parametrize(
    "args",
    [
        ["--serial", "/dev/ttyUSB0", "--simulate"],
        ["--baud", "1234"],
        ["--sim-adc-rate", "100"],
        ["--port", "notaport"],
    ],
)
def test_bad_command_lines_exit_with_usage_errors(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qsensor_pi", "serve", "--data", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "error" in done.stderr


def test_a_bad_clock_setting_is_refused_before_serving(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qsensor_pi", "serve", "--data", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "QSENSOR_CLOCK_DRIFT_PPM": "fast"},
    )
    assert done.returncode == 2
    assert "QSENSOR_CLOCK" in done.stderr and "listening" not in done.stdout


def test_listening_socket_is_labelled_tcp_so_answers_are_not_delayed() -> None:
    with listen_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio then sets TCP_NODELAY per connection
        assert sock.getsockname()[1] > 0
