"""Start the simulator, connect the driver, configure it, stream readings, stop cleanly."""

from __future__ import annotations

import sys
import time

from qsensor_core.sensor.driver import SensorDriver
from qsensor_core.sensor.models import Reading
from qsensor_core.simulator.process import SimulatorProcess

STREAM_SECONDS = 8.0


def _print_reading(reading: Reading) -> None:
    print(
        f"  #{reading.seq:<4} {reading.timestamp}  value={reading.value}"
        f"  TempC={reading.temp_c or '-'}  Vin={reading.vin or '-'}",
        flush=True,
    )


def main() -> int:
    print("qsensor demo: simulated Q-Series sensor on a pseudo-terminal")
    with SimulatorProcess(averaging=50, adc_rate=125, time_scale=0.25) as sim:
        print(f"simulator ready on {sim.link}")
        driver = SensorDriver(sim.link, 9600, on_reading=_print_reading)
        config = driver.connect()
        print(
            f"connected: unit {config.serial_number}, firmware {config.firmware}, "
            f"{config.mode}, averaging {config.averaging} at {config.adc_rate} Hz"
        )
        config = driver.set_averaging(25)
        rate_hz = 1 / config.nominal_period_s
        print(f"configured: averaging {config.averaging} -> about {rate_hz:.1f} Hz")
        driver.start_freerun()
        print(f"streaming for {STREAM_SECONDS:.0f} s:")
        time.sleep(STREAM_SECONDS)
        driver.stop()
        stats = driver.stats
        driver.disconnect()
    print(f"stopped cleanly: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
