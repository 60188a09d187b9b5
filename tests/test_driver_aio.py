"""AsyncSensor: the driver's exchanges run on its worker while the event loop keeps going."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qsensor_core.sensor.aio import AsyncSensor
from qsensor_core.sensor.driver import InvalidState, NotConnected, SensorDriver
from qsensor_core.sensor.models import DriverState, Reading
from qsensor_core.simulator.process import SimulatorProcess


async def _ticking(until: asyncio.Event, ticks: list[int]) -> None:
    while not until.is_set():
        ticks.append(1)
        await asyncio.sleep(0.01)


def test_async_sensor_runs_the_whole_cycle(tmp_path: Path) -> None:
    readings: list[Reading] = []

    async def scenario(link: str) -> None:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def on_reading(reading: Reading) -> None:  # worker thread: hop onto the loop
            readings.append(reading)
            loop.call_soon_threadsafe(arrived.set)

        sensor = AsyncSensor(SensorDriver(link, on_reading=on_reading))
        done, ticks = asyncio.Event(), []
        ticker = asyncio.create_task(_ticking(done, ticks))
        config = await sensor.connect()
        assert ticks, "the loop stood still during connect"
        assert sensor.config == config and sensor.state is DriverState.IDLE
        assert (await sensor.set_averaging(30)).averaging == 30
        assert (await sensor.set_adc_rate(250)).adc_rate == 250
        assert (await sensor.set_mode("polled", "Q")).tag == "Q"
        assert (await sensor.read_config()).mode == "polled"
        with pytest.raises(ValueError):
            await sensor.set_adc_rate(3)
        await sensor.start_freerun()
        await asyncio.wait_for(arrived.wait(), 10)
        with pytest.raises(InvalidState):
            await sensor.set_averaging(10)
        await sensor.pause()
        await sensor.resume()
        await sensor.stop()
        arrived.clear()
        await sensor.start_polled(5.0)
        await asyncio.wait_for(arrived.wait(), 10)
        await sensor.stop()
        assert sensor.stats.data == len(readings)
        await asyncio.gather(sensor.disconnect(), sensor.disconnect())  # e.g. shutdown + request
        await sensor.disconnect()
        assert sensor.state is DriverState.DISCONNECTED
        with pytest.raises(NotConnected):
            await sensor.read_config()
        done.set()
        await ticker

    with SimulatorProcess(time_scale=0.1, truth_log=tmp_path / "truth.csv") as sim:
        asyncio.run(scenario(sim.link))
        truth = [row["line"] for row in sim.read_truth()]
    assert [r.raw for r in readings] == truth[: len(readings)]
    assert {r.mode for r in readings} == {"freerun", "polled"}
