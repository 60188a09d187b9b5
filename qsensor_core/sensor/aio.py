"""AsyncSensor: the driver's methods as coroutines, so an event loop never waits on a serial port.

Each call hands the command to the driver's worker thread and awaits its Future through
`asyncio.wrap_future`; arguments are still checked at once (`ValueError` before anything is
sent). Callbacks keep running on the worker thread: use `loop.call_soon_threadsafe` in them to
reach the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from qsensor_core.sensor.driver import NotConnected, SensorDriver
from qsensor_core.sensor.models import DriverState, DriverStats, Mode, SensorConfig


class AsyncSensor:
    """Awaitable facade over one `SensorDriver`."""

    def __init__(self, driver: SensorDriver) -> None:
        self.driver = driver

    @property
    def state(self) -> DriverState:
        return self.driver.state

    @property
    def config(self) -> SensorConfig | None:
        return self.driver.config

    @property
    def stats(self) -> DriverStats:
        return self.driver.stats

    async def _run(self, command: str, *args: Any) -> Any:
        return await asyncio.wrap_future(self.driver.submit(command, *args))

    async def connect(self) -> SensorConfig:
        return await self._run("connect")

    async def read_config(self) -> SensorConfig:
        return await self._run("read_config")

    async def set_averaging(self, n: int) -> SensorConfig:
        return await self._run("set_averaging", n)

    async def set_adc_rate(self, rate: int) -> SensorConfig:
        return await self._run("set_adc_rate", rate)

    async def set_mode(self, mode: Mode, tag: str | None = None) -> SensorConfig:
        return await self._run("set_mode", mode, tag)

    async def start_freerun(self) -> None:
        await self._run("start_freerun")

    async def start_polled(self, poll_hz: float, tag: str | None = None) -> None:
        await self._run("start_polled", poll_hz, tag)

    async def pause(self) -> None:
        await self._run("pause")

    async def resume(self) -> None:
        await self._run("resume")

    async def stop(self) -> None:
        await self._run("stop")

    async def disconnect(self) -> None:
        """Like `SensorDriver.disconnect`; a no-op when not connected (or the worker is ending)."""
        with contextlib.suppress(NotConnected):
            await self._run("disconnect")
