"""Driver against a tiny scripted device on a real pty: refusals, missing prompts, stale menus.

The simulator behaves; this peer misbehaves on purpose (refuses valid values, never shows a
prompt, prints its menu twice, ends the menu prompt without a line break) so the driver's
handling of the device's answers is exercised where the simulator cannot reach.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import replace

import pytest

from qsensor_core.sensor import protocol as p
from qsensor_core.sensor.driver import (
    CommandRejected,
    DriverTimeouts,
    InvalidState,
    NotConnected,
    SensorDriver,
    SensorTimeout,
)
from qsensor_core.sensor.models import DriverState, LineKind, Reading

SETTINGS = "125,9600,1.0,dark,E,4.003,G,H,Q777   ,1.0,0.01,7.50,0,A,,1,125,S,27.01,uE,V,0"
DATA_LINE = "0.010073, 26.85, 7.494"
FAST = DriverTimeouts(prompt_s=0.5, menu_s=2.0, settle_s=0.15, mode_s=1.0, restart_s=0.5)


class _Stopped(Exception):
    pass


class ScriptedDevice:
    """Just enough of the firmware's menu to talk to, with faults switched on per letter.

    refuse: letters whose valid answer is refused anyway; mute: letters whose prompt is
    never printed; in_flight: data lines still sent after an ESC. `early_input` records
    bytes that arrived while the device was busy (before its menu prompt), which a correct
    driver never sends.
    """

    def __init__(
        self,
        *,
        refuse: str = "",
        mute: str = "",
        prompt_eol: bytes = b"\r\n",
        stale_first_menu: bool = False,
        pause_s: float = 0.3,
        in_flight: int = 0,
    ) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.received = bytearray()
        self.early_input = False
        self.data_written = 0
        self.settings = SETTINGS.split(",")
        self._refuse, self._mute = refuse, mute
        self._prompt_eol = prompt_eol
        self._stale = stale_first_menu
        self._pause_s = pause_s
        self._in_flight = in_flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- I/O ---------------------------------------------------------------------------

    def _read(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return None
            if select.select([self.master], [], [], left)[0]:
                byte = os.read(self.master, 1)
                self.received += byte
                return byte[0]
        raise _Stopped

    def _busy(self, seconds: float) -> None:
        time.sleep(seconds)
        if select.select([self.master], [], [], 0)[0]:
            self.early_input = True

    def _write(self, text: str, eol: bytes = b"\r\n") -> None:
        os.write(self.master, text.encode("ascii") + eol)

    # --- the script ----------------------------------------------------------------------

    def _serve(self) -> None:
        with contextlib.suppress(_Stopped, OSError):
            while True:
                self._stream()
                self._menu()

    def _stream(self) -> None:
        while (byte := self._read(0.05)) != p.ESC[0]:
            if byte is None:
                self._data()
        for _ in range(self._in_flight):  # lines already on their way when ESC arrived
            self._data()

    def _data(self) -> None:
        self._write(DATA_LINE)
        self.data_written += 1

    def _show_menu(self) -> None:
        self._busy(0.1)
        outputs = p.MENU_OUTPUTS.format(temp="enabled", vin="enabled")
        for line in (p.MENU_TITLE, p.MENU_AVERAGING.format(n=self.settings[0]), outputs):
            self._write(line)
        self._write(p.MENU_PROMPT, self._prompt_eol)

    def _enter_menu(self) -> None:
        if self._stale:  # a menu that was already on its way when ESC arrived
            self._stale = False
            self._write(p.MENU_PROMPT)
        self._write(p.BANNER_TITLE)
        self._show_menu()

    def _menu(self) -> None:
        self._enter_menu()
        while True:
            byte = self._read(None)
            assert byte is not None
            if byte == p.ESC[0]:
                self._enter_menu()
                continue
            letter = chr(byte)
            if letter == "X":
                self._read(0.05)
                self._write(p.RESET_LINES[0])
                self._write(p.RESET_LINES[1])
                return
            if letter == "^":
                self._read(0.05)
                self._write(",".join(self.settings))
            elif letter in "AR":
                self._read(0.05)
                self._number(letter)
            elif letter == "M":
                self._mode()
            else:
                continue
            self._show_menu()

    def _number(self, letter: str) -> None:
        if letter not in self._mute:
            if letter == "R":
                self._write(p.ADC_RATE_PROMPT_1)
            self._write(p.AVERAGING_PROMPT if letter == "A" else p.ADC_RATE_PROMPT_2, b"")
        typed = ""
        while (byte := self._read(None)) != p.CR[0]:
            typed += chr(byte or 0)
            os.write(self.master, bytes([byte or 0]))
        self._write("")
        if letter in self._refuse or not typed.isdigit():
            if letter == "A":
                self._write(p.AVERAGING_INVALID)
            else:
                self._write(p.ADC_RATE_INVALID, b"")
            self._busy(self._pause_s)
        elif letter == "A":
            self.settings[0] = typed
            self._write(p.AVERAGING_OK.format(n=typed))
        else:
            self.settings[16] = typed
            self._write(p.ADC_RATE_OK.format(r=typed))

    def _mode(self) -> None:
        self._write(p.MODE_PROMPT_1)
        if "M" not in self._mute:
            self._write(p.MODE_PROMPT_2, b"")
        answer = self._read(1.0)
        if answer is None:
            self._write("")
            self._write(p.MODE_TIMEOUT)
        elif answer == ord("0"):
            self._write("0")
            self.settings[12] = "0"
        elif answer == ord("1"):
            self._write("1")
            self._write(p.TAG_PROMPT_1)
            self._write(p.TAG_PROMPT_2, b"")
            tag = chr(self._read(1.0) or 0)
            if "M" in self._refuse or tag not in p.VALID_TAGS:
                self._write(p.BAD_TAG)
            else:
                self._write(tag)
                self.settings[12:14] = ["1", tag]
        else:
            self._write("")
            self._write(p.MODE_CONFUSED)


@contextlib.contextmanager
def connected(device: ScriptedDevice, **kwargs: object) -> Iterator[SensorDriver]:
    driver = SensorDriver(device.path, timeouts=FAST, **kwargs)  # type: ignore[arg-type]
    driver.connect()
    try:
        yield driver
    finally:
        driver.disconnect()


@pytest.fixture
def device_factory() -> Iterator[type[ScriptedDevice]]:
    made: list[ScriptedDevice] = []

    def make(**kwargs: object) -> ScriptedDevice:
        device = ScriptedDevice(**kwargs)  # type: ignore[arg-type]
        made.append(device)
        return device

    yield make  # type: ignore[misc]
    for device in made:
        device.close()


def test_connect_to_a_streaming_device_keeps_its_data(device_factory) -> None:
    readings: list[Reading] = []
    device = device_factory()
    time.sleep(0.2)
    with connected(device, on_reading=readings.append) as driver:
        assert driver.state is DriverState.IDLE
        assert driver.config is not None and driver.config.serial_number == "Q777"
    assert all(r.raw == DATA_LINE and r.value == "0.010073" for r in readings)
    assert [r.seq for r in readings] == list(range(len(readings)))


def test_data_in_flight_after_esc_is_delivered_once(device_factory) -> None:
    readings: list[Reading] = []
    device = device_factory(in_flight=3)
    with connected(device, on_reading=readings.append) as driver:
        assert len(readings) >= 3  # sent before the config was known: held, then classified
        before_open = device.data_written - len(readings)  # streamed before the port opened
        driver.start_freerun()
        time.sleep(0.3)
        driver.pause()
        written = device.data_written
        assert len(readings) == written - before_open
        driver.resume()
        time.sleep(0.3)
        driver.stop()
        assert len(readings) == device.data_written - before_open
        assert device.data_written > written
    assert [r.seq for r in readings] == list(range(len(readings)))


def test_connect_waits_out_a_stale_menu_prompt(device_factory) -> None:
    device = device_factory(stale_first_menu=True)
    with connected(device) as driver:
        assert driver.config is not None
    assert not device.early_input


def test_a_menu_prompt_without_line_break_still_ends_each_exchange(device_factory) -> None:
    readings: list[Reading] = []
    device = device_factory(prompt_eol=b"")
    with connected(device, on_reading=readings.append) as driver:
        assert driver.set_averaging(40).averaging == 40
        assert driver.set_adc_rate(250).adc_rate == 250
        driver.start_freerun()
        time.sleep(0.3)
        driver.stop()
        count = len(readings)
        assert count > 0
        assert driver.read_config().averaging == 40
    assert not device.early_input
    assert all(r.raw == DATA_LINE for r in readings)


def test_device_refusing_averaging_is_command_rejected(device_factory) -> None:
    device = device_factory(refuse="A")
    with connected(device) as driver:
        with pytest.raises(CommandRejected, match="averaging 100"):
            driver.set_averaging(100)
        assert driver.state is DriverState.IDLE
        assert driver.read_config().averaging == 125
    assert not device.early_input


def test_invalid_rate_without_line_break_waits_out_the_pause(device_factory) -> None:
    device = device_factory(refuse="R", pause_s=1.0)
    events = []
    with connected(device, on_event=events.append) as driver:
        with pytest.raises(CommandRejected, match="ADC rate 500"):
            driver.set_adc_rate(500)
        assert driver.read_config().adc_rate == 125
    assert not device.early_input  # nothing was sent during the device's pause
    rejected = [e.detail for e in events if e.kind == "rejected_line"]
    assert any(d.startswith(p.ADC_RATE_INVALID) for d in rejected)


def test_bad_tag_is_command_rejected(device_factory) -> None:
    device = device_factory(refuse="M")
    with connected(device) as driver:
        with pytest.raises(CommandRejected, match="Bad TAG"):
            driver.set_mode("polled", "C")
        assert driver.read_config().mode == "freerun"


def test_a_prompt_that_never_shows_is_completed_then_resynced(device_factory) -> None:
    device = device_factory(mute="A")
    with connected(device) as driver:
        with pytest.raises(SensorTimeout, match="averaging prompt"):
            driver.set_averaging(300)
        assert b"A\r\r" in device.received  # a bare CR completed the number prompt
        assert b"300" not in device.received
        assert driver.read_config().averaging == 125  # back in a known state
    assert not device.early_input


def test_a_missing_mode_prompt_is_answered_with_esc(device_factory) -> None:
    device = device_factory(mute="M")
    with connected(device) as driver:
        with pytest.raises(SensorTimeout):
            driver.set_mode("polled", "B")
        assert b"M\x1b" in device.received
        assert driver.read_config().mode == "freerun"


def test_rejected_lines_are_counted_per_kind_never_readings(device_factory) -> None:
    readings: list[Reading] = []
    device = device_factory()
    with connected(device, on_reading=readings.append) as driver:
        driver.read_config()
        stats = driver.stats
    assert stats.rejected[LineKind.MENU] > 0 and stats.rejected[LineKind.BANNER] > 0
    assert stats.rejected[LineKind.PROMPT] > 0  # the settings line
    assert stats.lines == stats.data + sum(stats.rejected.values())
    assert stats.data == len(readings)


def test_commands_in_the_wrong_state(device_factory) -> None:
    device = device_factory()
    driver = SensorDriver(device.path, timeouts=FAST)
    with pytest.raises(NotConnected):
        driver.read_config()
    driver.connect()
    try:
        with pytest.raises(InvalidState):
            driver.connect()
        with pytest.raises(InvalidState):
            driver.pause()
        with pytest.raises(InvalidState):
            driver.resume()
        driver.start_freerun()
        with pytest.raises(InvalidState):
            driver.set_averaging(10)
        with pytest.raises(InvalidState):
            driver.start_polled(1.0, "A")
    finally:
        driver.disconnect()
    assert driver.state is DriverState.DISCONNECTED
    driver.disconnect()  # idempotent


def test_disconnect_from_the_menu_restarts_sampling(device_factory) -> None:
    device = device_factory()
    with connected(device):
        pass
    assert device.received.endswith(p.CMD_EXIT)


def test_a_silent_port_fails_connect_in_bounded_time() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        driver = SensorDriver(os.ttyname(slave), timeouts=replace(FAST, menu_s=0.5))
        with pytest.raises(SensorTimeout, match="no menu"):
            driver.connect()
        assert driver.state is DriverState.DISCONNECTED
    finally:
        os.close(master)
        os.close(slave)


def test_concurrent_connects_start_one_worker(device_factory) -> None:
    """Exactly one caller connects; the others are told so at once, and none is left waiting."""
    device = device_factory()
    driver = SensorDriver(device.path, timeouts=FAST)
    callers = 6
    barrier = threading.Barrier(callers)
    outcomes: list[object] = []

    def connect() -> None:
        barrier.wait()
        try:
            outcomes.append(driver.connect())
        except InvalidState as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=connect, daemon=True) for _ in range(callers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads), "a connect() never returned"
        assert len(outcomes) == callers
        assert sum(not isinstance(o, InvalidState) for o in outcomes) == 1
        assert driver.read_config().serial_number == "Q777"
    finally:
        driver.disconnect()
