"""Acceptance runs: long freerun and polled acquisitions lose no line versus the truth log.

The simulated instrument runs 3.4 % slow (like the real one) with its USB adapter's jitter;
the device's own delays run at full length.
"""

from __future__ import annotations

import time
from pathlib import Path

from qsensor_core.sensor.driver import SensorDriver
from qsensor_core.sensor.models import DriverState, LineKind, Reading
from qsensor_core.simulator.process import SimulatorProcess

SLOW_PPM = 34_000


def _run(
    tmp_path: Path, start: str, seconds: float, **sim_options: object
) -> tuple[list[Reading], list[str], SensorDriver]:
    readings: list[Reading] = []
    truth_log = tmp_path / "truth.csv"
    with SimulatorProcess(truth_log=truth_log, ppm=SLOW_PPM, seed=11, **sim_options) as sim:
        driver = SensorDriver(sim.link, on_reading=readings.append)
        try:
            driver.connect()
            if start == "freerun":
                driver.start_freerun()
            else:
                driver.start_polled(2.0, "P")
            time.sleep(seconds)
            driver.stop()
            assert driver.state is DriverState.IDLE
            truth = [row["line"] for row in sim.read_truth()]
        finally:
            driver.disconnect()
    return readings, truth, driver


def _assert_no_line_lost(readings: list[Reading], truth: list[str]) -> None:
    assert [r.raw for r in readings] == truth
    assert [r.seq for r in readings] == list(range(len(truth)))


def test_sixty_seconds_of_freerun_at_10_hz(tmp_path: Path) -> None:
    readings, truth, driver = _run(tmp_path, "freerun", 60.0, averaging=25, adc_rate=250)
    assert len(truth) > 500  # ~9.7 lines/s for 60 s, less the restart
    _assert_no_line_lost(readings, truth)
    assert driver.stats.rejected[LineKind.UNKNOWN] == 0


def test_twenty_seconds_polled_at_2_hz(tmp_path: Path) -> None:
    readings, truth, driver = _run(tmp_path, "polled", 20.0, averaging=25, adc_rate=250)
    assert len(truth) >= 35
    _assert_no_line_lost(readings, truth)
    assert all(r.raw.startswith("P,") for r in readings)
    assert driver.stats.missed_polls == 0
