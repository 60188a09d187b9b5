"""The pure firmware model, driven with made-up times (no pty, no sleeping)."""

from __future__ import annotations

import random

import pytest

from qsensor_core.sensor import protocol as p
from qsensor_core.sensor.grammar import (
    DataLineGrammar,
    parse_outputs_menu_line,
    parse_settings,
)
from qsensor_core.simulator.firmware import BOOT_S, DeviceSettings, Firmware, Output
from qsensor_core.simulator.values import ValueModel


class Bench:
    """A firmware plus everything it printed, with helpers to talk to it at given times."""

    def __init__(self, *, time_scale: float = 1.0, ppm: float = 0.0, **settings: object) -> None:
        values = ValueModel(random.Random(7), 0.0)
        self.fw = Firmware(DeviceSettings(**settings), values, time_scale=time_scale, ppm=ppm)
        self.out: list[Output] = []

    def power_on(self, at: float = 0.0) -> Bench:
        self.out += self.fw.power_on(at)
        return self

    def send(self, data: bytes, at: float) -> None:
        self.fw.feed(data, at)
        self.out += self.fw.run(at)

    def run(self, until: float) -> None:
        self.out += self.fw.run(until)

    def mark(self) -> int:
        return len(self.out)

    def text(self, since: int = 0) -> str:
        return b"".join(o.data for o in self.out[since:]).decode("latin-1")

    def data(self, since: int = 0) -> list[Output]:
        return [o for o in self.out[since:] if o.is_data]

    def enter_menu(self, at: float) -> float:
        """ESC, then run past the menu delay; returns the time the menu was complete."""
        self.send(p.ESC, at)
        self.run(at + p.MENU_DELAY_S * self.fw._scale + 0.001)
        assert self.text().endswith(p.MENU_PROMPT + "\r\n")
        return at + p.MENU_DELAY_S * self.fw._scale + 0.001


def lines(text: str) -> list[str]:
    return text.split("\r\n")


# --- power-on, banner, freerun -----------------------------------------------------------


def test_power_on_prints_banner_then_streams_on_an_absolute_schedule() -> None:
    bench = Bench().power_on(0.0)
    bench.run(10.0)
    got = lines(bench.text())
    assert got[:3] == [p.BANNER_TITLE, "Unit ID Q12345   ", p.BANNER_FREERUN]
    assert got[8:11] == [p.BANNER_ADC_OK, *p.BANNER_FREERUN_START]
    data = bench.data()
    assert data[0].at == pytest.approx(p.FIRST_DATA_AFTER_RESET_S)
    assert [d.at - data[0].at for d in data] == pytest.approx([k * 1.0 for k in range(len(data))])
    assert len(data) == 7  # 4.0, 5.0, ... 10.0
    grammar = DataLineGrammar(polled_tag=None, temp=True, vin=True)
    for d in data:
        assert d.data.endswith(b"\r\n")
        fields = grammar.match(d.data.decode().removesuffix("\r\n"))
        assert fields is not None
        assert len(fields.value.split(".")[1]) == 6


def test_banner_is_printed_before_first_data_and_quiet_mode_hides_it() -> None:
    bench = Bench().power_on(0.0)
    bench.run(BOOT_S + 0.001)
    assert bench.text().startswith(p.BANNER_TITLE)
    quiet = Bench(quiet=True).power_on(0.0)
    quiet.run(4.5)
    assert p.BANNER_TITLE not in quiet.text()
    assert len(quiet.data()) == 1


def test_ppm_stretches_the_sampling_period_and_not_the_delays() -> None:
    bench = Bench(ppm=34_000).power_on(0.0)
    bench.run(100.0)
    data = bench.data()
    assert data[0].at == pytest.approx(4.0)
    assert (data[-1].at - data[0].at) / (len(data) - 1) == pytest.approx(1.034)


def test_optional_fields_and_preamble_follow_the_settings() -> None:
    bench = Bench(temp_output=False, vin_output=False, preamble="Q:").power_on(0.0)
    bench.run(4.0)
    line = bench.data()[0].data.decode().removesuffix("\r\n")
    assert DataLineGrammar(polled_tag=None, preamble="Q:", temp=False, vin=False).match(line)
    only_temp = Bench(vin_output=False).power_on(0.0)
    only_temp.run(4.0)
    line = only_temp.data()[0].data.decode().removesuffix("\r\n")
    assert DataLineGrammar(polled_tag=None, temp=True, vin=False).match(line)


def test_freerun_ignores_other_bytes_and_polled_commands() -> None:
    bench = Bench().power_on(0.0)
    bench.send(b"A\rhello" + p.polled_arm("A") + p.polled_query("A"), 4.5)
    bench.run(8.0)
    assert len(bench.data()) == 5
    assert p.MENU_PROMPT not in bench.text()


@pytest.mark.parametrize("key", [p.ESC, b"?"])
def test_escape_or_question_mark_stops_streaming_and_shows_banner_then_menu(key: bytes) -> None:
    bench = Bench().power_on(0.0)
    bench.run(5.5)
    mark = bench.mark()
    bench.send(key, 5.5)
    assert lines(bench.text(mark))[0] == p.BANNER_TITLE
    assert p.MENU_TITLE not in bench.text(mark)
    bench.run(5.5 + p.MENU_DELAY_S - 0.01)
    assert p.MENU_TITLE not in bench.text(mark)
    bench.run(5.5 + p.MENU_DELAY_S)
    assert bench.text(mark).endswith(p.MENU_PROMPT + "\r\n")
    bench.run(60.0)
    assert not bench.data(mark)


def test_menu_shows_settings_and_the_outputs_line_the_driver_parses() -> None:
    bench = Bench(averaging=50, adc_rate=62, mode="polled", tag="C", vin_output=False)
    bench.power_on(0.0)
    bench.enter_menu(1.0)
    menu = lines(bench.text())
    assert p.MENU_TITLE in menu
    assert "A to set number of samples averaged before update: 50" in menu
    assert "R to set ADC sample rate: 62" in menu
    assert "M to set the operating mode (0=streaming, 1=polled with tag= C) currently 1" in menu
    outputs = [line for line in menu if line.startswith(p.OUTPUTS_MENU_PREFIX)]
    assert [parse_outputs_menu_line(line) for line in outputs] == [(True, False)]


def test_settings_line_parses_and_matches_the_device() -> None:
    bench = Bench(averaging=300, adc_rate=250, mode="polled", tag="Z", preamble="$", baud=115200)
    bench.power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(b"^\r", t)
    line = lines(bench.text(mark))[0]
    config = parse_settings(line)
    assert line.split(",")[8] == "Q12345   "
    assert (config.averaging, config.adc_rate, config.mode, config.tag) == (300, 250, "polled", "Z")
    assert (config.baud, config.preamble, config.temp_output) == (115200, "$", True)
    assert config.extra_fields[0] == p.SETTINGS_TEMP_MARKER


def test_menu_reprints_one_second_after_a_command() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(b"^\r", t)
    bench.run(t + p.MENU_DELAY_S - 0.01)
    assert p.MENU_TITLE not in bench.text(mark)
    bench.run(t + p.MENU_DELAY_S + 0.01)
    assert bench.text(mark).endswith(p.MENU_PROMPT + "\r\n")


def test_bare_line_endings_in_the_menu_are_ignored() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(b"\r\n\r", t)
    bench.run(t + 30)
    assert bench.text(mark) == ""


# --- A: averaging ------------------------------------------------------------------------


@pytest.mark.parametrize("selection", [b"A\r", b"a\r", b"A\r\n", b"A"])
def test_averaging_accepts_a_valid_number(selection: bytes) -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(selection, t)
    bench.run(t + 0.1)
    assert bench.text(mark) == p.AVERAGING_PROMPT
    bench.send(b"250\r", t + 0.2)
    assert p.AVERAGING_OK.format(n=250) + "\r\n" in bench.text(mark)
    assert bench.fw.settings.averaging == 250


@pytest.mark.parametrize("typed", [b"0", b"70000", b"abc", b"", b"-5"])
def test_averaging_rejects_invalid_numbers_and_pauses(typed: bytes) -> None:
    bench = Bench(averaging=125).power_on(0.0)
    t = bench.enter_menu(1.0)
    bench.send(b"A\r", t)
    mark = bench.mark()
    bench.send(typed + b"\r", t + 0.1)
    assert p.AVERAGING_INVALID + "\r\n" in bench.text(mark)
    assert bench.fw.settings.averaging == 125
    pause = p.AVERAGING_INVALID_PAUSE_S + p.MENU_DELAY_S
    bench.run(t + 0.1 + pause - 0.01)
    assert p.MENU_TITLE not in bench.text(mark)
    bench.run(t + 0.1 + pause + 0.01)
    assert bench.text(mark).endswith(p.MENU_PROMPT + "\r\n")


def test_number_input_waits_forever_for_its_cr() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    bench.send(b"A\r", t)
    mark = bench.mark()
    bench.send(b"50", t + 0.1)
    bench.send(p.ESC + b"X\r"[:1], t + 0.2)
    bench.run(t + 100_000)
    assert bench.fw.next_wakeup() is None
    assert p.MENU_TITLE not in bench.text(mark)
    assert bench.fw.settings.averaging == 125


# --- R: ADC rate -------------------------------------------------------------------------


def test_adc_rate_accepts_a_valid_rate() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(b"R\r", t)
    assert bench.text(mark) == p.ADC_RATE_PROMPT_1 + "\r\n" + p.ADC_RATE_PROMPT_2
    bench.send(b"33\r", t + 0.1)
    assert p.ADC_RATE_OK.format(r=33) + "\r\n" in bench.text(mark)
    assert bench.fw.settings.adc_rate == 33


@pytest.mark.parametrize("typed", [b"100", b"0", b"x"])
def test_adc_rate_rejects_others_without_line_break_and_pauses(typed: bytes) -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    bench.send(b"R\r", t)
    mark = bench.mark()
    bench.send(typed + b"\r", t + 0.1)
    assert bench.text(mark).endswith(p.ADC_RATE_INVALID)
    assert bench.fw.settings.adc_rate == 125
    pause = p.ADC_RATE_INVALID_PAUSE_S + p.MENU_DELAY_S
    bench.run(t + 0.1 + pause - 0.01)
    assert p.MENU_TITLE not in bench.text(mark)
    bench.run(t + 0.1 + pause + 0.01)
    assert p.ADC_RATE_INVALID + p.MENU_TITLE + "\r\n" in bench.text(mark)


def test_adc_rate_waits_forever_for_its_cr() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    bench.send(b"R\r8", t)
    bench.run(t + 100_000)
    assert bench.fw.next_wakeup() is None
    assert bench.fw.settings.adc_rate == 125


# --- M: operating mode -------------------------------------------------------------------


def mode_command(bench: Bench, t: float, *answers: bytes) -> int:
    mark = bench.mark()
    bench.send(b"M", t)
    assert bench.text(mark) == p.MODE_PROMPT_1 + "\r\n" + p.MODE_PROMPT_2
    for i, answer in enumerate(answers):
        bench.send(answer, t + 0.1 * (i + 1))
    return mark


def test_mode_zero_saves_freerun() -> None:
    bench = Bench(mode="polled", tag="B").power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = mode_command(bench, t, b"0")
    assert bench.text(mark).endswith(p.MODE_PROMPT_2 + "0\r\n")
    assert bench.fw.settings.mode == "freerun"


@pytest.mark.parametrize(("typed", "tag"), [(b"D", "D"), (b"q", "Q")])
def test_mode_one_with_a_letter_saves_polled_with_that_tag(typed: bytes, tag: str) -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = mode_command(bench, t, b"1", typed)
    assert p.TAG_PROMPT_1 + "\r\n" + p.TAG_PROMPT_2 in bench.text(mark)
    assert (bench.fw.settings.mode, bench.fw.settings.tag) == ("polled", tag)


@pytest.mark.parametrize("typed", [b"5", b"\r", b"*"])
def test_mode_one_with_a_non_letter_is_a_bad_tag(typed: bytes) -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = mode_command(bench, t, b"1", typed)
    assert p.BAD_TAG + "\r\n" in bench.text(mark)
    assert (bench.fw.settings.mode, bench.fw.settings.tag) == ("freerun", "A")


@pytest.mark.parametrize("typed", [b"2", b"\r", b"x"])
def test_mode_other_answers_confuse_the_device(typed: bytes) -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = mode_command(bench, t, typed)
    assert p.MODE_CONFUSED + "\r\n" in bench.text(mark)
    assert bench.fw.settings.mode == "freerun"


def test_mode_with_cr_after_m_is_confused() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(b"M\r", t)
    assert p.MODE_CONFUSED in bench.text(mark)


@pytest.mark.parametrize("time_scale", [1.0, 0.1])
def test_mode_times_out_after_twenty_device_seconds(time_scale: float) -> None:
    bench = Bench(time_scale=time_scale).power_on(0.0)
    t = bench.enter_menu(10.0)
    mark = mode_command(bench, t)
    timeout = p.MODE_TIMEOUT_S * time_scale
    assert bench.fw.next_wakeup() == pytest.approx(t + timeout)
    bench.run(t + timeout - 0.001)
    assert p.MODE_TIMEOUT not in bench.text(mark)
    bench.run(t + timeout)
    assert p.MODE_TIMEOUT + "\r\n" in bench.text(mark)
    mark = bench.mark()
    bench.run(t + timeout + p.MENU_DELAY_S * time_scale)
    assert bench.text(mark).endswith(p.MENU_PROMPT + "\r\n")


def test_tag_prompt_times_out_too() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = mode_command(bench, t, b"1")
    bench.run(t + 0.1 + p.MODE_TIMEOUT_S)
    assert p.MODE_TIMEOUT in bench.text(mark)
    assert bench.fw.settings.mode == "freerun"


# --- X: restart --------------------------------------------------------------------------


def test_restart_prints_reset_lines_banner_and_samples_about_four_seconds_later() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(5.0)
    mark = bench.mark()
    bench.send(b"X\r", t)
    assert lines(bench.text(mark))[:2] == list(p.RESET_LINES)
    bench.run(t + 10)
    text = bench.text(mark)
    assert p.BANNER_TITLE in text
    assert p.BANNER_FREERUN_START[1] in text
    data = bench.data(mark)
    assert data[0].at == pytest.approx(t + p.FIRST_DATA_AFTER_RESET_S)
    assert len(data) == 7


def test_restart_uses_the_saved_mode_and_polled_needs_arming() -> None:
    bench = Bench().power_on(0.0)
    t = bench.enter_menu(1.0)
    mode_command(bench, t, b"1", b"E")
    t += 2
    bench.send(b"X\r", t)
    bench.run(t + 2)
    assert p.BANNER_POLLED.format(tag="E") in bench.text()
    assert p.BANNER_POLLED_START in bench.text()
    bench.send(p.polled_query("E"), t + 6)
    bench.run(t + 20)
    assert bench.data() == []


def test_quiet_restart_has_no_banner() -> None:
    bench = Bench(quiet=True).power_on(0.0)
    t = bench.enter_menu(1.0)
    mark = bench.mark()
    bench.send(b"X\r", t)
    bench.run(t + 4.5)
    assert p.BANNER_TITLE not in bench.text(mark)
    assert len(bench.data(mark)) == 1


# --- polled ------------------------------------------------------------------------------


def polled_bench(**settings: object) -> Bench:
    bench = Bench(mode="polled", tag="B", **settings).power_on(0.0)
    bench.run(5.0)
    return bench


def test_polled_query_before_arming_gets_no_reply() -> None:
    bench = polled_bench()
    bench.send(p.polled_query("B"), 5.0)
    bench.run(30.0)
    assert bench.data() == []


def test_polled_query_waits_for_the_running_average() -> None:
    bench = polled_bench()
    bench.send(p.polled_arm("B"), 5.0)
    bench.send(p.polled_query("B"), 5.2)
    assert bench.data() == []
    bench.run(6.0)
    data = bench.data()
    assert [d.at for d in data] == [pytest.approx(6.0)]
    line = data[0].data.decode().removesuffix("\r\n")
    assert line.startswith("B,")
    assert DataLineGrammar(polled_tag="B").match(line)


def test_polled_completed_average_is_answered_at_once_and_restarts_averaging() -> None:
    bench = polled_bench()
    bench.send(p.polled_arm("B"), 5.0)
    bench.send(p.polled_query("B"), 9.0)
    assert [d.at for d in bench.data()] == [pytest.approx(9.0)]
    bench.send(p.polled_query("B"), 9.5)
    bench.run(10.2)
    assert [d.at for d in bench.data()] == [pytest.approx(9.0), pytest.approx(10.0)]


def test_polled_wrong_tag_is_ignored_and_escape_reaches_the_menu() -> None:
    bench = polled_bench()
    bench.send(p.polled_arm("B"), 5.0)
    bench.send(p.polled_query("C"), 7.0)
    bench.run(9.0)
    assert bench.data() == []
    bench.send(p.ESC, 9.0)
    bench.run(10.1)
    assert bench.text().endswith(p.MENU_PROMPT + "\r\n")


def test_polled_arm_with_wrong_tag_does_not_arm() -> None:
    bench = polled_bench()
    bench.send(p.polled_arm("C") + p.polled_query("B"), 5.0)
    bench.run(10.0)
    assert bench.data() == []


def test_firmware_is_deterministic_for_a_seed() -> None:
    def run() -> str:
        bench = Bench().power_on(0.0)
        bench.run(20.0)
        return bench.text()

    assert run() == run()
