"""The data-line grammar is an allow-list: exactly the configured shape is data, nothing else."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from qsensor_core.sensor import protocol as p
from qsensor_core.sensor.grammar import (
    DataLineGrammar,
    SettingsParseError,
    classify,
    parse_outputs_menu_line,
    parse_settings,
)
from qsensor_core.sensor.models import LineKind

SETTINGS_LINE = (
    "125,9600,1.000000E+00,QSP2150 dark,E,4.003,G,H,Q12345   ,1.000000,0.010000,7.50,"
    "1,B,$,1,250,S,27.01,uE/cm^2sec,V,0"
)
FREERUN = DataLineGrammar(polled_tag=None)

# --- strategies ---------------------------------------------------------------------------

_PREAMBLE_CHARS = string.ascii_letters + string.digits + " #$:;=_@"


@st.composite
def grammars(draw: st.DrawFn) -> tuple[DataLineGrammar, dict[str, object]]:
    shape = {
        "polled_tag": draw(st.none() | st.sampled_from(p.VALID_TAGS)),
        "preamble": draw(st.text(_PREAMBLE_CHARS, max_size=8)),
        "temp": draw(st.booleans()),
        "vin": draw(st.sampled_from([True, False, None])),
    }
    return DataLineGrammar(**shape), shape


def _number(decimals: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda sign, whole, frac: f"{sign}{whole}.{frac}",
        st.sampled_from(["", "-"]),
        st.integers(0, 99999).map(str),
        decimals.flatmap(lambda n: st.text(string.digits, min_size=n, max_size=n)),
    )


VALUES = _number(st.integers(1, 8))
TEMPS = _number(st.just(2))
VINS = _number(st.just(3))


@st.composite
def data_lines(
    draw: st.DrawFn, shape: dict[str, object]
) -> tuple[str, str, str | None, str | None]:
    """A line in `shape` and the text of its fields."""
    value = draw(VALUES)
    temp = draw(TEMPS) if shape["temp"] else None
    vin_present = shape["vin"] if shape["vin"] is not None else draw(st.booleans())
    vin = draw(VINS) if vin_present else None
    tag = f"{shape['polled_tag']}," if shape["polled_tag"] else ""
    fields = [value] + [f for f in (temp, vin) if f is not None]
    return tag + str(shape["preamble"]) + ", ".join(fields), value, temp, vin


_INT = st.integers(0, 65535).map(str)
_DECIMAL = st.floats(0, 100, allow_nan=False).map(lambda x: f"{x:.2f}")
_SERIAL = st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=8)

BANNER_LINES = st.one_of(
    st.just(p.BANNER_TITLE),
    _SERIAL.map(lambda s: p.BANNER_UNIT_ID.format(serial=s + "   ")),
    st.just(p.BANNER_FREERUN),
    st.sampled_from(p.VALID_TAGS).map(lambda t: p.BANNER_POLLED.format(tag=t)),
    st.builds(lambda r: p.BANNER_ADC.format(rate=r, gain=1), st.sampled_from(p.VALID_ADC_RATES)),
    _INT.map(lambda n: p.BANNER_AVERAGING.format(n=n)),
    _DECIMAL.map(lambda t: p.BANNER_TEMPERATURE.format(temp=t)),
    _DECIMAL.map(lambda v: p.BANNER_SUPPLY.format(vin=v)),
    st.just(p.BANNER_CALFACTOR.format(calfactor="1.000000E+00", units=" uE/cm^2sec")),
    st.sampled_from([p.BANNER_ADC_OK, p.BANNER_POLLED_START, *p.BANNER_FREERUN_START]),
    st.sampled_from(p.RESET_LINES),
)
MENU_LINES = st.one_of(
    st.sampled_from([p.MENU_TITLE, p.MENU_PROMPT, p.MENU_RESTART, p.MENU_SETTINGS]),
    _SERIAL.map(lambda s: p.MENU_MODEL.format(serial=s)),
    _INT.map(lambda n: p.MENU_AVERAGING.format(n=n)),
    st.sampled_from(p.VALID_BAUDS).map(lambda b: p.MENU_BAUD.format(baud=b)),
    st.just(p.MENU_CALFACTOR.format(calfactor="1.000000E+00")),
    _DECIMAL.map(lambda d: p.MENU_DARK.format(dark=d)),
    _DECIMAL.map(lambda d: p.MENU_IMMERSION.format(immersion=d)),
    st.builds(
        lambda t, m: p.MENU_MODE.format(tag=t, mode=m),
        st.sampled_from(p.VALID_TAGS),
        st.sampled_from("01"),
    ),
    st.builds(
        lambda t, v: p.MENU_OUTPUTS.format(temp=t, vin=v),
        st.sampled_from(["enabled", "disabled"]),
        st.sampled_from(["enabled", "disabled"]),
    ),
    st.text(_PREAMBLE_CHARS, max_size=8).map(lambda s: p.MENU_PREAMBLE.format(preamble=s)),
    st.sampled_from(p.VALID_ADC_RATES).map(lambda r: p.MENU_ADC_RATE.format(rate=r)),
)
PROMPT_LINES = st.one_of(
    st.builds(lambda a: p.AVERAGING_PROMPT + a, _INT),
    st.builds(lambda a: p.ADC_RATE_PROMPT_2.lstrip() + a, _INT),
    st.sampled_from(
        [
            p.ADC_RATE_PROMPT_1,
            p.AVERAGING_INVALID,
            p.ADC_RATE_INVALID,
            p.ADC_RATE_INVALID + p.MENU_TITLE,  # the menu follows the unterminated text
            p.MODE_PROMPT_1,
            p.TAG_PROMPT_1,
            p.BAD_TAG,
            p.MODE_CONFUSED,
            p.MODE_TIMEOUT,
            SETTINGS_LINE,
        ]
    ),
    _INT.map(lambda n: p.AVERAGING_OK.format(n=n)),
    st.sampled_from(p.VALID_ADC_RATES).map(lambda r: p.ADC_RATE_OK.format(r=r)),
    st.sampled_from("01").map(lambda a: p.MODE_PROMPT_2 + a),
    st.sampled_from(p.VALID_TAGS).map(lambda t: p.TAG_PROMPT_2 + t),
)

# --- properties ---------------------------------------------------------------------------


@given(st.data(), grammars())
def test_any_line_of_the_configured_shape_is_data_with_exact_field_text(data, gs) -> None:
    grammar, shape = gs
    line, value, temp, vin = data.draw(data_lines(shape))
    fields = grammar.match(line)
    assert fields is not None
    assert (fields.value, fields.temp_c, fields.vin) == (value, temp, vin)
    assert classify(line, grammar) == (LineKind.DATA, fields)


@given(st.data(), grammars())
def test_a_torn_line_is_never_data(data, gs) -> None:
    """Any proper prefix of a line ending in a fixed-decimals field fails (strict outputs)."""
    grammar, shape = gs
    assume(shape["vin"] is True or (shape["temp"] and shape["vin"] is False))
    line = data.draw(data_lines(shape))[0]
    cut = data.draw(st.integers(0, len(line) - 1))
    assert grammar.match(line[:cut]) is None


@given(st.data(), grammars(), st.text(min_size=1, max_size=3))
def test_extra_text_around_a_data_line_is_never_data(data, gs, extra) -> None:
    grammar, shape = gs
    line = data.draw(data_lines(shape))[0]
    assume(not extra.isdigit())
    assert classify(line + "x" + extra, grammar)[0] is not LineKind.DATA
    assert classify("x" + extra + line, grammar)[0] is not LineKind.DATA
    assert classify(f" {line}", grammar)[0] is not LineKind.DATA


@given(st.data(), grammars())
def test_lines_of_another_shape_are_not_data(data, gs) -> None:
    grammar, shape = gs
    other = dict(shape, polled_tag=None if shape["polled_tag"] else "A")
    line = data.draw(data_lines(other))[0]
    assert grammar.match(line) is None


@given(grammars(), BANNER_LINES)
def test_banner_lines_are_never_data(gs, line) -> None:
    assert classify(line, gs[0])[0] is LineKind.BANNER


@given(grammars(), MENU_LINES)
def test_menu_lines_are_never_data(gs, line) -> None:
    assert classify(line, gs[0])[0] is LineKind.MENU


@given(grammars(), PROMPT_LINES)
def test_prompt_lines_are_never_data(gs, line) -> None:
    assert classify(line, gs[0])[0] is LineKind.PROMPT


@given(grammars(), st.text(max_size=60))
def test_random_text_outside_the_data_alphabet_is_never_data(gs, text) -> None:
    grammar, shape = gs
    alphabet = (
        set(string.digits + ".-, ") | set(str(shape["preamble"])) | set(shape["polled_tag"] or "")
    )
    assume(any(ch not in alphabet for ch in text))
    kind, fields = classify(text, grammar)
    assert kind is not LineKind.DATA and fields is None


@given(st.binary(min_size=1, max_size=40))
def test_nothing_is_data_without_a_grammar(raw) -> None:
    assert classify(raw.decode("latin-1"), None)[0] is not LineKind.DATA


# --- examples -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "0.010073, 26.85",  # Vin missing while the device says it is enabled
        "0.010073, 26.85, 7.494, 1.000",
        "0.010073,26.85,7.494",
        "0.010073, 26.8, 7.494",
        "0.010073, 26.85, 7.49",
        ".010073, 26.85, 7.494",
        "0.010073 , 26.85, 7.494",
        "1e-3, 26.85, 7.494",
        "0.010073, 26.85, 7.494\r",
        "A,0.010073, 26.85, 7.494",
        "",
    ],
)
def test_strict_freerun_shape_rejects_near_misses(line: str) -> None:
    assert FREERUN.match(line) is None


def test_real_recorded_values_are_accepted_verbatim() -> None:
    fields = FREERUN.match("0.01005, 26.43, 7.494")
    assert fields is not None and fields.value == "0.01005"  # no float round trip: no padding


def test_polled_reply_with_preamble() -> None:
    grammar = DataLineGrammar(polled_tag="B", preamble="$", temp=False, vin=False)
    fields = grammar.match("B,$-0.000012")
    assert fields is not None and (fields.value, fields.temp_c, fields.vin) == (
        "-0.000012",
        None,
        None,
    )
    assert grammar.match("C,$-0.000012") is None
    assert grammar.match("B,-0.000012") is None


def test_unknown_vin_flag_accepts_both_shapes() -> None:
    grammar = DataLineGrammar(polled_tag=None, vin=None)
    assert grammar.match("0.1, 26.85") is not None
    assert grammar.match("0.1, 26.85, 7.494") is not None


def test_grammar_follows_the_read_back_config() -> None:
    config = parse_settings(SETTINGS_LINE, vin_output=False)
    grammar = DataLineGrammar.for_config(config)
    assert grammar.match("B,$0.010000, 27.01") is not None
    assert grammar.match("B,$0.010000, 27.01, 7.494") is None


def test_parse_settings_fields() -> None:
    config = parse_settings(SETTINGS_LINE, vin_output=True)
    assert config.averaging == 125 and config.adc_rate == 250 and config.baud == 9600
    assert config.serial_number == "Q12345"
    assert (config.mode, config.tag, config.preamble) == ("polled", "B", "$")
    assert config.temp_output and config.vin_output
    assert config.extra_fields == ("S", "27.01", "uE/cm^2sec", "V", "0")
    assert config.nominal_period_s == 0.5


@pytest.mark.parametrize(
    "line",
    [
        "A to set number of samples averaged before update: 125",
        SETTINGS_LINE.replace(",E,", ",X,"),
        SETTINGS_LINE.replace(",1,B,", ",7,B,"),
        SETTINGS_LINE.replace("125,9600", "12x,9600"),
        ",".join(SETTINGS_LINE.split(",")[:16]),
    ],
)
def test_parse_settings_rejects_other_lines(line: str) -> None:
    with pytest.raises(SettingsParseError):
        parse_settings(line)


def test_outputs_menu_line() -> None:
    line = p.MENU_OUTPUTS.format(temp="enabled", vin="disabled")
    assert parse_outputs_menu_line(line) == (True, False)
    assert parse_outputs_menu_line(p.MENU_RESTART) is None
