"""The pure chunk format: exact row bytes, csv quoting, sync ids, parsing and torn-tail scans."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsensor_core.recording.csv_format import (
    HEADER,
    HEADER_BYTES,
    check_marker,
    check_sync_id,
    field,
    marker_row,
    parse_chunk,
    parse_row,
    reading_row,
    scan_chunk,
    sync_value,
)
from qsensor_core.sensor.models import Reading

BURN_IN = Path(__file__).resolve().parents[2] / "shared/data/burn_in_30min_freerun_125avg_125hz.csv"
WALL_NS = 1_763_726_400_000_123_456  # 2025-11-21T12:00:00.000123456Z


def make_reading(
    seq: int = 7,
    *,
    sensor_id: str = "SN-42",
    value: str = "0.010073",
    temp_c: str | None = "26.85",
    vin: str | None = "7.494",
    mono_ns: int = 987_654_321,
) -> Reading:
    return Reading(
        seq=seq,
        mono_ns=mono_ns,
        wall_ns=WALL_NS,
        sensor_id=sensor_id,
        mode="freerun",
        value=value,
        temp_c=temp_c,
        vin=vin,
        raw=f"{value}, {temp_c}, {vin}",
    )


def csv_module_row(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue()


def test_header_is_the_documented_column_list() -> None:
    assert HEADER == (
        "timestamp,sensor_id,mode,value,TempC,Vin,seq,mono_ns,sensor_seq,sync_id,sync_seq\n"
    )


def test_reading_row_is_byte_exact() -> None:
    row = reading_row(make_reading(), seq=12, timestamp="2025-11-21T12:00:00.000123+00:00")
    assert row == (
        "2025-11-21T12:00:00.000123+00:00,SN-42,freerun,0.010073,26.85,7.494,12,987654321,7,,\n"
    )


def test_absent_fields_are_empty() -> None:
    row = reading_row(make_reading(temp_c=None, vin=None), seq=0, timestamp="T")
    assert row == "T,SN-42,freerun,0.010073,,,0,987654321,7,,\n"
    parsed = parse_row(row)
    assert (parsed.temp_c, parsed.vin, parsed.sync_id, parsed.sync_seq) == (None, None, None, None)


def test_marker_rows_are_byte_exact() -> None:
    start = marker_row(
        timestamp="T",
        sensor_id="SN-42",
        mode="SYNC_START",
        sync_id="1a2b3c4d-5e6f-4711-8899-aabbccddeeff",
        periodic_sequence=None,
        seq=3,
        mono_ns=55,
    )
    assert start == "T,SN-42,SYNC_START,439041101,,,3,55,,1a2b3c4d-5e6f-4711-8899-aabbccddeeff,\n"
    periodic = marker_row(
        timestamp="T",
        sensor_id="SN-42",
        mode="SYNC_PERIODIC",
        sync_id="FFFFFFFF",
        periodic_sequence=9,
        seq=4,
        mono_ns=56,
    )
    assert periodic == "T,SN-42,SYNC_PERIODIC,4294967295,,,4,56,,FFFFFFFF,9\n"
    row = parse_row(periodic)
    assert row.is_marker and row.sync_seq == 9 and row.sensor_seq is None


def test_real_device_fields_round_trip_exactly() -> None:
    """Rows from the real burn-in recording (padded serial field included) come back as written."""
    if not BURN_IN.exists():
        pytest.skip("burn-in recording not available")
    with BURN_IN.open(newline="") as handle:
        source = list(csv.reader(handle))[1:200]
    for seq, (_, sensor_id, mode, value, temp, vin) in enumerate(source):
        reading = Reading(seq, 1, WALL_NS, sensor_id, mode, value, temp, vin, "")  # type: ignore[arg-type]
        line = reading_row(reading, seq=seq, timestamp="T")
        assert line == f"T,{sensor_id},{mode},{value},{temp},{vin},{seq},1,{seq},,\n"
        back = parse_row(line)
        assert (back.sensor_id, back.value, back.temp_c, back.vin) == (sensor_id, value, temp, vin)


def test_comma_and_quote_fields_are_quoted_like_the_csv_module() -> None:
    reading = make_reading(sensor_id='probe "A", left')
    line = reading_row(reading, seq=1, timestamp="T")
    assert line.startswith('T,"probe ""A"", left",freerun,')
    assert parse_row(line).sensor_id == 'probe "A", left'


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=30))
def test_field_quoting_matches_the_csv_module(text: str) -> None:
    fields = ["T", text, "freerun", "1.0", "", "", "0", "1", "0", "", ""]
    expected = csv_module_row(fields)
    reading = make_reading(0, sensor_id=text, value="1.0", temp_c=None, vin=None, mono_ns=1)
    line = reading_row(reading, seq=0, timestamp="T")
    assert line == expected
    assert parse_row(line).sensor_id == text


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "\n"])
def test_line_breaks_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        field(text)
    with pytest.raises(ValueError):
        reading_row(make_reading(sensor_id=text), seq=0, timestamp="T")


@pytest.mark.parametrize(
    "sync_id",
    [
        "1a2b3c4d",
        "1A2B3C4D-0000-4000-8000-000000000000",
        "0123456789abcdef",
        "f" * 64,
        "-1a2b-3c4d-",
    ],
)
def test_valid_sync_ids(sync_id: str) -> None:
    assert check_sync_id(sync_id) == sync_id


@pytest.mark.parametrize(
    "sync_id",
    [
        "",
        "1a2b3c4",
        "--------",
        "1a2b-3c4",
        "g1a2b3c4d",
        "1a2b3c4d ",
        "f" * 65,
        "1a2b3c4d/..",
        12345678,
    ],
)
def test_invalid_sync_ids(sync_id: object) -> None:
    with pytest.raises(ValueError, match="sync id"):
        check_sync_id(sync_id)


def test_sync_value_uses_the_first_eight_hex_digits() -> None:
    assert sync_value("00-00-00-0a-ffff") == 10
    assert sync_value("deadbeefcafe") == 0xDEADBEEF


@pytest.mark.parametrize(
    ("marker_type", "sequence", "message"),
    [
        ("BEGIN", None, "marker type"),
        ("START", 1, "only for PERIODIC"),
        ("PERIODIC", -1, ">= 0"),
        ("PERIODIC", True, "integer"),
        ("PERIODIC", 1.5, "integer"),
    ],
)
def test_marker_requests_are_checked(marker_type: str, sequence: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_marker(marker_type, "1a2b3c4d", sequence)


def test_scan_counts_rows_and_the_torn_tail() -> None:
    rows = [
        reading_row(make_reading(0), seq=0, timestamp="T0"),
        marker_row(
            timestamp="T1",
            sensor_id="SN-42",
            mode="SYNC_STOP",
            sync_id="1a2b3c4d",
            periodic_sequence=None,
            seq=1,
            mono_ns=2,
        ),
    ]
    complete = HEADER_BYTES + "".join(rows).encode()
    scan = scan_chunk(complete + b"2025-11-21T12:00:01.0,SN-42,free")
    assert (scan.complete_bytes, scan.torn_bytes, scan.has_header) == (len(complete), 32, True)
    tally = scan.tally
    assert (tally.rows, tally.readings, tally.markers) == (2, 1, 1)
    assert (tally.first_seq, tally.last_seq) == (0, 1)
    assert (tally.first_timestamp, tally.last_timestamp) == ("T0", "T1")
    assert [r.seq for r in parse_chunk(complete)] == [0, 1]


def test_parse_chunk_refuses_torn_or_headerless_data() -> None:
    with pytest.raises(ValueError, match="torn"):
        parse_chunk(HEADER_BYTES + b"T,SN")
    with pytest.raises(ValueError, match="header"):
        parse_chunk(b"a,b,c\n")
    assert not scan_chunk(HEADER_BYTES[:10]).has_header


def test_rows_with_the_wrong_number_of_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="expected 11 fields"):
        parse_row("T,SN,freerun,1.0\n")
