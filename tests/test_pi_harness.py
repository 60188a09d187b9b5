"""Shared parts of the qsensor-pi tests: a real uvicorn server and a simulated sensor.

The service runs either in a thread of the test process (`ServedApp`) or as its own process
(`ServiceProcess`, for kill -9); the sensor is always the project's simulator on a pty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from qsensor_core.clock import Clock
from qsensor_core.processes import stop_process
from qsensor_core.simulator.process import SimulatorProcess
from qsensor_pi.app import create_app
from qsensor_pi.cli import listen_socket
from qsensor_pi.service import ServiceSettings

FAST_SIM = {"averaging": 25, "adc_rate": 125, "time_scale": 0.05}  # 5 readings/s, short delays


class UvicornThread:
    """Any ASGI app behind a real uvicorn on 127.0.0.1 (free port), in a thread."""

    def __init__(self, app: Any) -> None:
        self._sock = listen_socket("127.0.0.1", 0)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        wait_for(lambda: self._server.started, 15, "uvicorn did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._sock.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs)


class ServedApp(UvicornThread):
    """The qsensor-pi application (`create_app`) served by `UvicornThread`."""

    def __init__(self, settings: ServiceSettings, clock: Clock | None = None) -> None:
        self.app = create_app(settings, clock)
        self.service = self.app.state.service
        self.sim: SimulatorProcess | None = None
        super().__init__(self.app)

    def __enter__(self) -> ServedApp:
        super().__enter__()
        return self


class ServiceProcess:
    """`python -m qsensor_pi serve` as a child process; its port is read from its first line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "qsensor_pi", "serve", "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(
            [*cmd, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if "listening on http://" not in first:
            self.proc.kill()
            raise RuntimeError(f"qsensor-pi did not start: {first!r} {self.proc.stdout.read()}")
        self.url = first.split("listening on ", 1)[1]
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self.output: list[str] = []
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._drain.join(5)

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self._drain.join(5)  # all of its output read


def wait_for(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s: {message}")


def wait_connected(client: httpx.Client, timeout: float = 20) -> dict[str, Any]:
    def connected() -> dict[str, Any] | None:
        status = client.get("/status").json()
        return status if status["connected"] and status["state"] == "idle" else None

    return wait_for(connected, timeout, "service did not connect to the sensor")


def wait_readings(client: httpx.Client, count: int, timeout: float = 20) -> None:
    wait_for(lambda: client.get("/status").json()["rows"] >= count, timeout, "no readings")


@contextlib.contextmanager
def service_on_simulator(
    folder: Path, settings: dict[str, Any] | None = None, **sim_options: Any
) -> Iterator[ServedApp]:
    """A simulator and the service connected to it (idle), both under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {"truth_log": folder / "truth.csv", **FAST_SIM, **sim_options}
    with SimulatorProcess(**options) as device:
        settings = ServiceSettings(
            data_dir=folder / "data", serial_port=device.link, **(settings or {})
        )
        with ServedApp(settings) as app, app.client() as client:
            app.sim = device
            wait_connected(client)
            yield app
