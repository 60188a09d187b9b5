"""`--bench-speedup`: the simulator samples faster than a real device, for ingest benchmarks."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from qsensor_core.sensor import protocol as p
from qsensor_core.simulator.firmware import DeviceSettings, Firmware
from qsensor_core.simulator.process import SimulatorProcess
from qsensor_core.simulator.values import ValueModel


def _data_times(speedup: float, ppm: float = 0.0) -> list[float]:
    values = ValueModel(random.Random(3), 0.0)
    settings = DeviceSettings(averaging=1, adc_rate=500)
    fw = Firmware(settings, values, time_scale=1.0, ppm=ppm, bench_speedup=speedup)
    out = fw.power_on(0.0) + fw.run(p.FIRST_DATA_AFTER_RESET_S + 1.0)
    return [o.at for o in out if o.is_data]


def test_speedup_divides_the_period_but_not_the_delays() -> None:
    plain, fast = _data_times(1.0), _data_times(4.0)
    assert plain[0] == pytest.approx(p.FIRST_DATA_AFTER_RESET_S)
    assert fast[0] == pytest.approx(p.FIRST_DATA_AFTER_RESET_S)
    assert (fast[-1] - fast[0]) / (len(fast) - 1) == pytest.approx(0.002 / 4)
    assert len(fast) == pytest.approx(4 * len(plain), abs=4)


def test_speedup_combines_with_ppm() -> None:
    times = _data_times(2.0, ppm=100_000)
    assert (times[-1] - times[0]) / (len(times) - 1) == pytest.approx(0.002 * 1.1 / 2)


@pytest.mark.parametrize("value", ["0.5", "0", "101", "nan"])
def test_out_of_range_speedup_exits_with_status_2(tmp_path: Path, value: str) -> None:
    link = str(tmp_path / "l")
    done = subprocess.run(
        [sys.executable, "-m", "qsensor_core.simulator", "--link", link, "--bench-speedup", value],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert "--bench-speedup" in done.stderr


def test_process_streams_above_500_lines_per_second(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    options = {"averaging": 1, "adc_rate": 500, "time_scale": 0, "bench_speedup": 4}
    with SimulatorProcess(truth_log=truth, quiet_banner=True, **options) as sim:
        port = serial.Serial(sim.link, 9600, timeout=0.1)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            port.read(port.in_waiting or 1)
        port.close()
        rows = sim.read_truth()
    mono = [int(r["mono_ns"]) for r in rows]
    rate = (len(mono) - 1) / ((mono[-1] - mono[0]) / 1e9)
    assert 1600 < rate < 2400  # nominally 2000 lines/s, loosely (shared CI machines)
