"""SensorDriver against the simulator (`qsensor-sim` on a real pty, pyserial in the driver).

The simulator's truth log holds every data line it wrote, exactly as written; the driver's
readings are compared with it line by line.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import serial

from qsensor_core.sensor import protocol as p
from qsensor_core.sensor.driver import DriverTimeouts, SensorDriver
from qsensor_core.sensor.grammar import classify
from qsensor_core.sensor.models import DriverEvent, DriverState, LineKind, Reading
from qsensor_core.simulator.process import SimulatorProcess


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Session:
    driver: SensorDriver
    sim: SimulatorProcess
    readings: list[Reading] = field(default_factory=list)
    events: list[DriverEvent] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)  # where the callbacks ran

    def on_reading(self, reading: Reading) -> None:
        self.threads.add(threading.current_thread().name)
        self.readings.append(reading)

    def on_event(self, event: DriverEvent) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append(event)

    def truth(self) -> list[str]:
        return [row["line"] for row in self.sim.read_truth()]

    def raw(self) -> list[str]:
        return [r.raw for r in self.readings]

    def events_of(self, kind: str) -> list[DriverEvent]:
        return [e for e in self.events if e.kind == kind]

    def more_readings(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        target = len(self.readings) + count
        return wait_for(lambda: len(self.readings) >= target, timeout_s)


class Rig:
    """Starts simulators and drivers for one test and stops them all afterwards."""

    def __init__(self, tmp_path: Path, stack: contextlib.ExitStack) -> None:
        self._tmp = tmp_path
        self._stack = stack
        self._count = itertools.count()

    def sim(self, **options: object) -> SimulatorProcess:
        n = next(self._count)
        options.setdefault("time_scale", 0.1)
        options.setdefault("seed", n)
        options.setdefault("truth_log", self._tmp / f"truth{n}.csv")
        return self._stack.enter_context(SimulatorProcess(**options))

    def session(self, sim: SimulatorProcess, *, connect: bool = True, **kwargs: object) -> Session:
        holder: list[Session] = []
        driver = SensorDriver(
            sim.link,
            on_reading=lambda r: holder[0].on_reading(r),
            on_event=lambda e: holder[0].on_event(e),
            **kwargs,  # type: ignore[arg-type]
        )
        holder.append(Session(driver, sim))
        self._stack.callback(driver.disconnect)
        if connect:
            driver.connect()
        return holder[0]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with contextlib.ExitStack() as stack:
        yield Rig(tmp_path, stack)


def is_in_order_subsequence(lines: list[str], truth: list[str]) -> bool:
    """Each line matches a later truth line than the one before (values can repeat)."""
    remaining = iter(truth)
    return all(any(line == t for t in remaining) for line in lines)


def assert_readings_are_the_truth(s: Session) -> None:
    """Every data line written up to now, exactly once, in order; nothing else."""
    assert s.raw() == s.truth()
    assert [r.seq for r in s.readings] == list(range(len(s.readings)))
    monos = [r.mono_ns for r in s.readings]
    assert monos == sorted(monos)


# --- connect and configuration ----------------------------------------------------------


def test_connect_reads_the_full_config(rig: Rig) -> None:
    sim = rig.sim(
        averaging=25, adc_rate=250, serial_number="QX42", preamble="$", tag="C", vin=False
    )
    s = rig.session(sim)
    config = s.driver.config
    assert s.driver.state is DriverState.IDLE
    assert config is not None
    assert (config.averaging, config.adc_rate, config.baud) == (25, 250, 9600)
    assert (config.serial_number, config.preamble, config.tag) == ("QX42", "$", "C")
    assert config.mode == "freerun" and config.temp_output and config.vin_output is False
    assert config.firmware == p.FIRMWARE_VERSION
    assert s.driver.read_config() == config


def test_setters_change_and_read_back_the_device(rig: Rig) -> None:
    s = rig.session(rig.sim())
    d = s.driver
    assert d.set_averaging(1).averaging == 1
    assert d.set_averaging(65535).averaging == 65535
    assert d.set_averaging(40).averaging == 40
    for rate in p.VALID_ADC_RATES:
        assert d.set_adc_rate(rate).adc_rate == rate
    polled = d.set_mode("polled", "K")
    assert (polled.mode, polled.tag) == ("polled", "K")
    assert d.set_mode("polled").tag == "K"  # keeps the device's tag
    assert d.set_mode("freerun").mode == "freerun"
    assert d.read_config() == d.config
    assert d.config is not None and d.config.averaging == 40


INVALID_CALLS = [
    ("set_averaging", (0,)),
    ("set_averaging", (65536,)),
    ("set_averaging", (-5,)),
    ("set_averaging", (2.5,)),
    ("set_averaging", (True,)),
    ("set_averaging", ("10",)),
    ("set_adc_rate", (100,)),
    ("set_adc_rate", (0,)),
    ("set_adc_rate", ("125",)),
    ("set_mode", ("burst",)),
    ("set_mode", ("polled", "a")),
    ("set_mode", ("polled", "AB")),
    ("set_mode", ("polled", "1")),
    ("set_mode", ("freerun", "A")),
    ("start_polled", (0,)),
    ("start_polled", (-1.0,)),
    ("start_polled", (math.inf,)),
    ("start_polled", (math.nan,)),
    ("start_polled", ("fast",)),
    ("start_polled", (1.0, "?")),
]


def test_invalid_arguments_are_refused_before_sending(rig: Rig) -> None:
    s = rig.session(rig.sim())
    before = s.driver.config
    lines_before = s.driver.stats.lines
    for method, args in INVALID_CALLS:
        with pytest.raises(ValueError):
            getattr(s.driver, method)(*args)
    assert s.driver.stats.lines == lines_before  # nothing was sent, so nothing came back
    assert s.driver.read_config() == before
    assert s.driver.state is DriverState.IDLE


# --- acquisition ---------------------------------------------------------------------------


def test_freerun_delivers_every_line_exactly(rig: Rig) -> None:
    s = rig.session(rig.sim(averaging=25, adc_rate=250, serial_number="Q9"))
    s.driver.start_freerun()
    assert s.driver.state is DriverState.FREERUN
    assert s.more_readings(15)
    s.driver.stop()
    assert s.driver.state is DriverState.IDLE
    assert_readings_are_the_truth(s)
    first = s.readings[0]
    assert first.sensor_id == "Q9" and first.mode == "freerun"
    assert first.raw == f"{first.value}, {first.temp_c}, {first.vin}"
    assert first.timestamp.endswith("+00:00")


def test_polled_acquisition_sets_the_mode_and_polls(rig: Rig) -> None:
    s = rig.session(rig.sim(averaging=25, adc_rate=250))
    s.driver.start_polled(5.0, "B")
    assert s.driver.state is DriverState.POLLED
    assert s.driver.config is not None and s.driver.config.mode == "polled"
    assert s.more_readings(8)
    s.driver.stop()
    assert_readings_are_the_truth(s)
    assert all(r.raw.startswith("B,") and r.mode == "polled" for r in s.readings)
    stats = s.driver.stats
    assert stats.missed_polls == 0
    assert stats.polls >= len(s.readings)


def test_polls_are_paced_by_the_device_average(rig: Rig) -> None:
    """Asking faster than the device averages: one query waits for each reply."""
    s = rig.session(rig.sim(averaging=100, adc_rate=250))  # 0.4 s per average
    s.driver.start_polled(50.0, "A")
    assert s.more_readings(4)
    s.driver.stop()
    assert_readings_are_the_truth(s)
    assert s.driver.stats.missed_polls == 0
    assert s.driver.stats.polls <= len(s.readings) + 1


def test_pause_and_resume_freerun_and_polled(rig: Rig) -> None:
    s = rig.session(rig.sim(averaging=25, adc_rate=250))
    d = s.driver
    d.start_freerun()
    assert s.more_readings(3)
    d.pause()
    assert d.state is DriverState.PAUSED
    d.pause()  # already paused: nothing to do
    paused_at = len(s.readings)
    time.sleep(0.5)
    assert len(s.readings) == paused_at  # the device is in its menu
    d.resume()
    assert d.state is DriverState.FREERUN
    assert s.more_readings(3)
    d.stop()
    d.start_polled(4.0, "E")
    assert s.more_readings(3)
    d.pause()
    d.resume()
    assert d.state is DriverState.POLLED
    assert s.more_readings(3)
    d.stop()
    assert_readings_are_the_truth(s)
    assert {r.mode for r in s.readings} == {"freerun", "polled"}


def test_fifty_restarts_leak_no_banner_into_the_data(rig: Rig) -> None:
    s = rig.session(rig.sim(time_scale=0.02, averaging=5, adc_rate=250))
    d = s.driver
    d.start_freerun()
    for i in range(50):
        assert s.more_readings(1, timeout_s=5.0), f"no data after restart {i}"
        if i % 2:
            d.pause()
            d.resume()
        else:
            d.stop()
            d.start_freerun()
    assert s.more_readings(1)
    d.stop()
    assert_readings_are_the_truth(s)
    assert s.driver.stats.rejected[LineKind.BANNER] >= 50 * 9  # each ESC and X prints one
    assert all(classify(r.raw, None)[0] is LineKind.UNKNOWN for r in s.readings)


def test_quiet_device_restarts_without_a_banner(rig: Rig) -> None:
    sim = rig.sim(quiet_banner=True, averaging=25, adc_rate=250)
    s = rig.session(sim, timeouts=DriverTimeouts(restart_s=0.5))
    s.driver.start_freerun()
    assert s.more_readings(3)
    s.driver.pause()
    s.driver.resume()
    assert s.more_readings(3)
    s.driver.stop()
    s.driver.start_polled(5.0, "Z")
    assert s.more_readings(3)
    s.driver.stop()
    assert_readings_are_the_truth(s)


def test_garbage_lines_are_rejected_and_never_recorded(rig: Rig) -> None:
    s = rig.session(rig.sim(garbage_rate=0.2, averaging=5, adc_rate=125, seed=7))
    s.driver.start_freerun()
    assert s.more_readings(60)
    s.driver.stop()
    assert_readings_are_the_truth(s)
    unknown = s.driver.stats.rejected[LineKind.UNKNOWN]
    assert unknown > 0
    rejected = [e for e in s.events_of("rejected_line") if e.line_kind is LineKind.UNKNOWN]
    assert len(rejected) == unknown


# --- connecting to a device in any state ---------------------------------------------------


def test_connect_to_a_streaming_device(rig: Rig) -> None:
    sim = rig.sim(averaging=5, adc_rate=250)
    with serial.Serial(sim.link, 9600, timeout=2) as port:  # let it stream to someone first
        assert port.readline()
    s = rig.session(sim)
    assert s.driver.config is not None and s.driver.state is DriverState.IDLE
    assert set(s.raw()) <= set(s.truth())


def test_connect_to_a_polled_device(rig: Rig) -> None:
    s = rig.session(rig.sim(mode="polled", tag="D"))
    assert s.driver.config is not None
    assert (s.driver.config.mode, s.driver.config.tag) == ("polled", "D")
    s.driver.start_polled(4.0)
    assert s.more_readings(2)
    s.driver.stop()
    assert all(r.raw.startswith("D,") for r in s.readings)


def test_connect_while_the_device_boots_and_prints_its_banner(rig: Rig) -> None:
    for delay_s in (0.45, 0.5):  # the banner comes 0.5 s after power-on
        sim = rig.sim(time_scale=1.0, averaging=25, adc_rate=250)
        s = rig.session(sim, connect=False)
        time.sleep(delay_s)
        assert s.driver.connect().serial_number == "Q12345"
        assert s.driver.state is DriverState.IDLE


def test_disconnect_leaves_the_device_sampling(rig: Rig) -> None:
    sim = rig.sim(averaging=5, adc_rate=250)
    for pause_first in (False, True):
        s = rig.session(sim)
        if pause_first:
            s.driver.start_freerun()
            s.driver.pause()
        s.driver.disconnect()
        assert s.driver.state is DriverState.DISCONNECTED
        with serial.Serial(sim.link, 9600, timeout=0.2) as port:
            lines = [port.readline().decode().strip() for _ in range(30)]
        assert any(line in s.truth() for line in lines), lines


def test_disconnect_while_polling_keeps_answering(rig: Rig) -> None:
    sim = rig.sim(averaging=25, adc_rate=250)
    s = rig.session(sim)
    s.driver.start_polled(5.0, "A")
    assert s.more_readings(2)
    s.driver.disconnect()
    with serial.Serial(sim.link, 9600, timeout=1) as port:
        port.write(p.polled_query("A"))
        assert port.readline().startswith(b"A,")


# --- losing the link ---------------------------------------------------------------------


def test_unplug_and_reconnect(rig: Rig) -> None:
    sim = rig.sim(averaging=10, adc_rate=250, unplug_after=2.0, unplug_for=1.0)
    s = rig.session(sim)
    s.driver.start_freerun()
    assert wait_for(lambda: s.events_of("link_lost"), 10)
    assert s.driver.state in (DriverState.RECONNECTING, DriverState.FREERUN)
    before_gap = len(s.readings)
    assert wait_for(lambda: s.events_of("link_restored"), 15)
    assert s.driver.state is DriverState.FREERUN
    assert s.more_readings(10)
    s.driver.stop()

    restored = s.events_of("link_restored")[0]
    assert restored.last_seq_before_gap == before_gap - 1
    assert restored.gap_s is not None and restored.gap_s >= 0.9
    assert s.driver.stats.reconnects == 1
    assert not s.events_of("error")  # same serial number
    seqs = [r.seq for r in s.readings]
    assert seqs == list(range(len(seqs)))  # seq continues across the reconnect
    truth = s.truth()
    assert is_in_order_subsequence(s.raw(), truth)  # in order, no duplicates
    assert len(truth) - len(s.readings) <= 2  # at most what was in the pty when the cable went


def test_driver_without_reconnect_reports_the_loss(rig: Rig) -> None:
    s = rig.session(rig.sim(unplug_after=1.0), reconnect=False)
    s.driver.start_freerun()
    assert wait_for(lambda: s.driver.state is DriverState.DISCONNECTED, 10)
    assert s.events_of("link_lost")
    with pytest.raises(Exception, match="not connected"):
        s.driver.read_config()


def test_commands_while_reconnecting_fail_fast(rig: Rig) -> None:
    sim = rig.sim(averaging=10, adc_rate=250, unplug_after=1.0, unplug_for=2.0)
    s = rig.session(sim)
    s.driver.start_freerun()
    assert wait_for(lambda: s.driver.state is DriverState.RECONNECTING, 10)
    with pytest.raises(Exception, match="reconnecting"):
        s.driver.set_averaging(10)
    s.driver.stop()  # nothing to resume once the link is back
    assert wait_for(lambda: s.driver.state is DriverState.IDLE, 15)
    assert s.events_of("link_restored")


def test_callbacks_run_on_the_worker_thread(rig: Rig) -> None:
    s = rig.session(rig.sim(averaging=5, adc_rate=250))
    s.driver.start_freerun()
    assert s.more_readings(2)
    s.driver.stop()
    assert s.events and s.threads == {f"qsensor-driver {s.sim.link}"}


def test_polled_acquisition_comes_back_after_a_reconnect(rig: Rig) -> None:
    sim = rig.sim(averaging=25, adc_rate=250, unplug_after=2.0, unplug_for=0.5)
    s = rig.session(sim)
    s.driver.start_polled(5.0, "G")
    assert wait_for(lambda: s.events_of("link_restored"), 15)
    assert s.driver.state is DriverState.POLLED
    assert s.more_readings(5)
    s.driver.stop()
    assert all(r.raw.startswith("G,") for r in s.readings)
    assert is_in_order_subsequence(s.raw(), s.truth())
    assert len(s.truth()) - len(s.readings) <= 1  # at most a reply in the pty at the cut


def test_another_device_behind_the_same_path_is_reported(rig: Rig, tmp_path: Path) -> None:
    link = tmp_path / "ttyQ"
    first = rig.sim(link=link, serial_number="QFIRST")
    s = rig.session(first)
    s.driver.start_freerun()
    assert s.more_readings(2)
    first.stop()
    assert wait_for(lambda: s.driver.state is DriverState.RECONNECTING)
    rig.sim(link=link, serial_number="QSECOND")
    assert wait_for(lambda: s.events_of("link_restored"), 15)
    assert "QSECOND" in s.events_of("error")[0].detail
    assert s.more_readings(2)
    assert s.readings[-1].sensor_id == "QSECOND" and s.readings[0].sensor_id == "QFIRST"


def test_concurrent_callers_are_served_one_exchange_at_a_time(rig: Rig) -> None:
    s = rig.session(rig.sim())
    results: list[object] = []

    def ask() -> None:
        for _ in range(3):
            results.append(s.driver.read_config())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [s.driver.config] * 12
