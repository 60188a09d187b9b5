"""Pure parts of the topside mirror: limits, bucket math, reconcile plan, config, SSE, store."""

from __future__ import annotations

import hashlib
import heapq
import io
import json
from pathlib import Path

import httpx
import pytest

from qsensor_topside.bwlimit import format_bytes, format_rate, parse_bwlimit, parse_size
from qsensor_topside.client import PiError, check_content_range, parse_tail_answer
from qsensor_topside.config import (
    ConfigError,
    load_config,
    vehicle_from_arg,
    vehicle_name,
)
from qsensor_topside.plan import (
    LocalSession,
    Retry,
    backoff_delay,
    manifests_to_refresh,
    plan_chunks,
)
from qsensor_topside.progress import CatchUpBar
from qsensor_topside.remote import RemoteManifest, RemoteSession, chunk_index
from qsensor_topside.sse import SSEParser, format_event
from qsensor_topside.store import VehicleStore
from qsensor_topside.token_bucket import RateMeter, TokenBucket

KiB = 1024

# -- bandwidth limit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500K", 500 * KiB),
        ("500k", 500 * KiB),
        ("2M", 2 * KiB * KiB),
        ("1.5M", int(1.5 * KiB * KiB)),
        ("1G", KiB**3),
        ("100", 100 * KiB),  # rclone: a bare number is KiB/s
        ("4096B", 4096),
        ("0", 0),
        ("off", 0),
        ("2MiB/s", 2 * KiB * KiB),
        (0, 0),
        (123456, 123456),
    ],
)
def test_bwlimit_parses_rclone_style(text: str | int, expected: int) -> None:
    assert parse_bwlimit(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "-5K", "5X", "1,5M", "K"])
def test_bwlimit_rejects_garbage_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_bwlimit(text)


def test_sizes_default_to_bytes_and_format_back() -> None:
    assert parse_size("200") == 200
    assert parse_size("256M") == 256 * KiB * KiB
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_rate(500 * KiB) == "500.0 KiB/s"
    assert format_rate(0) == "unlimited"


# -- token bucket ----------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_unlimited_never_waits() -> None:
    bucket = TokenBucket(0, clock=FakeTime())
    assert bucket.unlimited
    assert all(bucket.reserve(10**9) == 0 for _ in range(5))


def test_bucket_burst_then_rate() -> None:
    clock = FakeTime()
    bucket = TokenBucket(1000, burst=500, clock=clock)
    assert bucket.reserve(500) == 0  # the burst is free
    assert bucket.reserve(1000) == pytest.approx(1.0)  # then one second per 1000 bytes
    clock.now = 1.0
    assert bucket.reserve(250) == pytest.approx(0.25)
    clock.now = 10.0  # a long pause refills only up to the burst
    assert bucket.reserve(500) == 0
    assert bucket.reserve(1) > 0


def _simulate(rate: float, transfers: list[int], seconds: float) -> list[tuple]:
    """Concurrent transfers that each read their piece size, then wait what the bucket says."""
    clock = FakeTime()
    bucket = TokenBucket(rate, clock=clock)
    log: list[tuple[float, int]] = []
    ready = [(0.0, i) for i in range(len(transfers))]
    heapq.heapify(ready)
    while ready:
        clock.now, who = heapq.heappop(ready)
        if clock.now >= seconds:
            break
        size = transfers[who]
        log.append((clock.now, size))
        heapq.heappush(ready, (clock.now + bucket.reserve(size), who))
    return log


@pytest.mark.parametrize("transfers", [[32 * KiB], [32 * KiB, 64 * KiB, 16 * KiB]])
def test_bucket_holds_cap_in_every_10s_window_and_uses_the_link(transfers: list[int]) -> None:
    rate = 500 * KiB
    log = _simulate(rate, transfers, 120.0)
    for start in [x / 2 for x in range(0, 220)]:
        window = sum(n for t, n in log if start <= t < start + 10)
        assert window <= 1.05 * rate * 10
        assert window >= 0.9 * rate * 10


def test_rate_meter_counts_a_sliding_window() -> None:
    clock = FakeTime()
    meter = RateMeter(window_s=5, clock=clock)
    for second in range(10):
        clock.now = float(second)
        meter.add(1000)
    assert meter.total == 10_000
    assert meter.rate() == pytest.approx(5 * 1000 / 5)
    clock.now = 100.0
    assert meter.rate() == 0


# -- reconcile plan --------------------------------------------------------------------------

SHA = "a" * 64


def manifest(sid: str, state: str, sizes: list[int], open_index: int | None = None, **kw):
    return RemoteManifest.model_validate(
        {
            "schema_version": 1,
            "session_id": sid,
            "state": state,
            "chunks": [
                {
                    "index": i,
                    "name": f"chunk_{i:05d}.csv",
                    "rows": 10,
                    "size_bytes": size,
                    "sha256": SHA,
                }
                for i, size in enumerate(sizes)
            ],
            "open_chunk": None if open_index is None else f"chunk_{open_index:05d}.csv.open",
            **kw,
        }
    )


def summary(sid: str, state: str, chunks: int, open_chunk: str | None = None) -> RemoteSession:
    return RemoteSession(session_id=sid, state=state, chunks=chunks, open_chunk=open_chunk)


def names(actions) -> list[tuple[str, str, int]]:
    return [(a.session_id, a.chunk.name, a.offset) for a in actions]


def test_manifest_refresh_when_missing_or_behind() -> None:
    local = {
        "s1": LocalSession("s1", manifest("s1", "stopped", [10, 10])),
        "s2": LocalSession("s2", manifest("s2", "recording", [10], 1)),
        "s3": LocalSession("s3", manifest("s3", "recording", [10], 1)),
    }
    remote = [
        summary("s1", "stopped", 2),  # up to date
        summary("s2", "recording", 2, "chunk_00002.csv.open"),  # a chunk was sealed since
        summary("s3", "stopped", 2),  # stopped since: its last chunk must be listed
        summary("s4", "recording", 0, "chunk_00000.csv.open"),  # new
    ]
    assert manifests_to_refresh(remote, local) == ["s2", "s3", "s4"]


def test_plan_fetches_every_missing_chunk_in_order() -> None:
    sessions = [
        LocalSession("b", manifest("b", "stopped", [5, 6], started_at="2026-01-02")),
        LocalSession(
            "a",
            manifest("a", "stopped", [1, 2, 3], started_at="2026-01-01"),
            verified={"chunk_00001.csv": 2},
        ),
    ]
    plan = plan_chunks(sessions, {}, now=0)
    assert names(plan.ready) == [
        ("a", "chunk_00000.csv", 0),
        ("a", "chunk_00002.csv", 0),
        ("b", "chunk_00000.csv", 0),
        ("b", "chunk_00001.csv", 0),
    ]
    assert plan.waiting == []
    assert sum(a.remaining for a in plan.ready) == 1 + 3 + 5 + 6


def test_failed_chunk_is_retried_not_skipped() -> None:
    session = LocalSession(
        "s", manifest("s", "recording", [10, 10, 10], 3), verified={"chunk_00000.csv": 10}
    )
    retries = {("s", "chunk_00001.csv"): Retry(2, next_at=50.0, last_error="HTTP 500")}
    before = plan_chunks([session], retries, now=10.0)
    assert names(before.ready) == [("s", "chunk_00002.csv", 0)]
    assert names(a for a, _ in before.waiting) == [("s", "chunk_00001.csv", 0)]
    assert [at for _, at in before.waiting] == [50.0]
    # a later chunk verified meanwhile does not move any mark past the failed one
    later = LocalSession(
        "s",
        session.manifest,
        verified={"chunk_00000.csv": 10, "chunk_00002.csv": 10},
    )
    after = plan_chunks([later], retries, now=50.0)
    assert names(after.ready) == [("s", "chunk_00001.csv", 0)]


def test_last_chunk_of_a_stopped_session_is_fetched() -> None:
    stopped = manifest("s", "stopped", [10, 10, 7])
    session = LocalSession(
        "s",
        stopped,
        verified={"chunk_00000.csv": 10, "chunk_00001.csv": 10},
        partial={"chunk_00002.csv": 4},  # the live tail had got this far
    )
    plan = plan_chunks([session], {}, now=0)
    assert names(plan.ready) == [("s", "chunk_00002.csv", 4)]


def test_restart_resumes_part_files_and_restarts_bad_ones() -> None:
    session = LocalSession(
        "s",
        manifest("s", "stopped", [100, 100, 100, 100]),
        verified={"chunk_00000.csv": 100, "chunk_00003.csv": 99},  # 3: wrong size
        partial={"chunk_00001.csv": 60, "chunk_00002.csv": 150},  # 2: longer than the chunk
    )
    plan = plan_chunks([session], {}, now=0)
    assert names(plan.ready) == [
        ("s", "chunk_00001.csv", 60),
        ("s", "chunk_00002.csv", 0),
        ("s", "chunk_00003.csv", 0),
    ]
    assert plan.ready[0].remaining == 40


def test_sessions_without_a_manifest_copy_wait_for_it() -> None:
    assert plan_chunks([LocalSession("s")], {}, now=0).ready == []


def test_backoff_grows_is_capped_and_jittered() -> None:
    delays = [backoff_delay(n, initial=1, maximum=60, jitter=0.999999) for n in range(1, 10)]
    assert delays[:4] == pytest.approx([1, 2, 4, 8], rel=1e-3)
    assert max(delays) == pytest.approx(60, rel=1e-3)
    assert backoff_delay(3, initial=1, maximum=60, jitter=0) == 2.0  # half of 4


def test_remote_models_reject_unsafe_names() -> None:
    with pytest.raises(ValueError, match="unsafe session id"):
        RemoteSession(session_id="../etc", state="stopped")
    with pytest.raises(ValueError, match="unsafe chunk name"):
        manifest("s", "stopped", [1]).model_validate(
            {
                "session_id": "s",
                "state": "stopped",
                "chunks": [
                    {"index": 0, "name": "../x.csv", "rows": 1, "size_bytes": 1, "sha256": SHA}
                ],
            }
        )
    with pytest.raises(ValueError, match="not a chunk name"):
        RemoteSession(session_id="s", state="recording", open_chunk="../../x")
    assert chunk_index("chunk_00012.csv.open") == 12


# -- config ----------------------------------------------------------------------------------


def test_cli_overrides_toml_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "topside.toml"
    toml.write_text(
        'data = "mirror"\nbwlimit = "2M"\npoll_interval = 30\n'
        '[[vehicle]]\nurl = "http://192.168.2.2/extensionv2/qsensor"\n'
        '[[vehicle]]\nname = "rov2"\nurl = "http://10.0.0.2:9150"\n'
    )
    from_file = load_config(toml, {})
    assert from_file.data == tmp_path / "mirror"  # relative to the file
    assert from_file.bwlimit == 2 * KiB * KiB
    assert from_file.poll_interval == 30
    assert from_file.tail_interval == 1.0  # default
    assert [v.name for v in from_file.vehicles] == ["192.168.2.2_80_extensionv2_qsensor", "rov2"]

    cli = load_config(
        toml,
        {
            "bwlimit": "0",
            "data": tmp_path / "other",
            "poll_interval": None,  # not given on the command line
            "vehicles": [vehicle_from_arg("rov9=http://127.0.0.1:1")],
        },
    )
    assert cli.bwlimit == 0
    assert cli.data == tmp_path / "other"
    assert cli.poll_interval == 30
    assert [v.name for v in cli.vehicles] == ["rov9"]


def test_config_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bwlimit"):
        load_config(
            None, {"data": tmp_path, "vehicles": [vehicle_from_arg("http://a")], "bwlimit": "x"}
        )
    with pytest.raises(ConfigError, match="vehicles"):
        load_config(None, {"data": tmp_path})
    with pytest.raises(ConfigError, match="unique"):
        load_config(
            None,
            {
                "data": tmp_path,
                "vehicles": [vehicle_from_arg("http://a"), vehicle_from_arg("http://a")],
            },
        )
    bad = tmp_path / "bad.toml"
    bad.write_text("data = [")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad, {})
    with pytest.raises(ValueError, match="expected http"):
        vehicle_from_arg("ftp://x")


def test_vehicle_names_from_urls() -> None:
    assert vehicle_name("http://192.168.2.2/extensionv2/qsensor") == (
        "192.168.2.2_80_extensionv2_qsensor"
    )
    assert vehicle_name("http://127.0.0.1:9150/") == "127.0.0.1_9150"
    assert vehicle_name("https://rov.local/a b") == "rov.local_443_a-b"
    spec = vehicle_from_arg("blue=http://rov.local:8000/x")
    assert (spec.name, spec.url) == ("blue", "http://rov.local:8000/x")


# -- SSE -------------------------------------------------------------------------------------


def test_sse_parser_events_ids_and_comments() -> None:
    parser = SSEParser()
    text = (
        ': ping\n\nevent: chunk_sealed\nid: s/3\ndata: {"index": 3}\n\n'
        "data: a\ndata: b\n\nevent: state\r\ndata: x\r\n\r\n"
    )
    events = [e for line in text.split("\n") if (e := parser.feed(line.rstrip("\r")))]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("chunk_sealed", '{"index": 3}', "s/3"),
        ("message", "a\nb", None),
        ("state", "x", None),
    ]
    assert parser.last_id == "s/3"
    again = SSEParser()
    round_trip = [again.feed(line) for line in format_event("status", '{"a":1}', "7").split("\n")]
    assert next(e for e in round_trip if e).data == '{"a":1}'


# -- progress bar ----------------------------------------------------------------------------


def test_catch_up_bar_appears_for_big_backlogs_and_finishes() -> None:
    out = io.StringIO()
    clock = FakeTime()
    bar = CatchUpBar(out, clock=clock)
    bar.update(backlog=1000, received=0, rate=0)
    assert out.getvalue() == ""  # small backlog: no bar
    bar.update(backlog=40 * KiB * KiB, received=0, rate=0)
    bar.update(backlog=10 * KiB * KiB, received=30 * KiB * KiB, rate=KiB * KiB)
    assert "75%" in out.getvalue() and "ETA 0:10" in out.getvalue()
    clock.now = 42
    bar.update(backlog=0, received=40 * KiB * KiB, rate=KiB * KiB)
    assert out.getvalue().endswith("caught up: 40.0 MiB in 42 s\n")


# -- store (real files) ----------------------------------------------------------------------


def test_store_part_resume_verify_promote(tmp_path: Path) -> None:
    store = VehicleStore(tmp_path / "rov")
    data = b"timestamp,x\n" + b"".join(b"2026-01-01T00:00:00+00:00,%d\n" % i for i in range(500))
    part = store.open_part("s1", "chunk_00000.csv", 0)
    part.write(data[:1000])
    part.close()
    assert store.scan("s1").partial == {"chunk_00000.csv": 1000}
    resumed = store.open_part("s1", "chunk_00000.csv", store.part_size("s1", "chunk_00000.csv"))
    assert resumed.size == 1000
    resumed.write(data[1000:])
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    resumed.close()
    store.promote("s1", "chunk_00000.csv")
    assert (tmp_path / "rov" / "s1" / "chunk_00000.csv").read_bytes() == data
    assert store.scan("s1").verified == {"chunk_00000.csv": len(data)}
    assert store.scan("s1").partial == {}


def test_store_truncates_a_part_longer_than_the_offset(tmp_path: Path) -> None:
    store = VehicleStore(tmp_path)
    store.append_part("s", "chunk_00001.csv", 0, b"abc\ndef\n")
    part = store.open_part("s", "chunk_00001.csv", 4)
    assert part.size == 4
    assert part.hexdigest() == hashlib.sha256(b"abc\n").hexdigest()
    part.reset()
    assert part.size == 0
    part.close()
    assert store.part_size("s", "chunk_00001.csv") == 0


def test_store_append_checks_the_offset(tmp_path: Path) -> None:
    store = VehicleStore(tmp_path)
    assert store.append_part("s", "chunk_00000.csv", 0, b"a\n") == 2
    with pytest.raises(OSError, match="expected 5"):
        store.append_part("s", "chunk_00000.csv", 5, b"b\n")


def test_store_manifest_copy_is_atomic_and_read_back(tmp_path: Path) -> None:
    store = VehicleStore(tmp_path)
    raw = json.dumps(
        {"schema_version": 1, "session_id": "s", "state": "stopped", "chunks": [], "extra": 1}
    ).encode()
    assert store.save_manifest("s", raw) is True
    assert store.save_manifest("s", raw) is False  # unchanged: not rewritten
    assert store.load_manifest("s").state == "stopped"
    assert store.session_ids() == ["s"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["manifest.json"]
    (tmp_path / "s" / "manifest.json").write_text("{broken")
    assert store.load_manifest("s") is None  # refetched from the Pi


def test_store_refuses_unsafe_paths(tmp_path: Path) -> None:
    store = VehicleStore(tmp_path)
    with pytest.raises(ValueError):
        store.final_path("..", "chunk_00000.csv")
    with pytest.raises(ValueError):
        store.part_path("s", "../../etc/passwd")


# -- Pi answers checked before they touch the disk --------------------------------------------


def test_tail_answers_are_checked_against_their_headers() -> None:
    headers = httpx.Headers(
        {"X-Chunk-Name": "chunk_00003.csv", "X-Chunk-State": "open", "X-Next-Offset": "110"}
    )
    read = parse_tail_answer(headers, 3, 100, b"0123456,9\n")
    assert (read.name, read.next_offset, read.sealed) == ("chunk_00003.csv", 110, False)
    with pytest.raises(PiError, match="X-Next-Offset 110 != body end"):
        parse_tail_answer(headers, 3, 100, b"012345,9\n")  # a byte lost in transit
    with pytest.raises(PiError, match="unexpected X-Chunk-Name"):
        parse_tail_answer(headers, 4, 100, b"0123456,9\n")
    sealed = httpx.Headers(
        {
            "X-Chunk-Name": "chunk_00003.csv",
            "X-Chunk-State": "sealed",
            "X-Next-Offset": "110",
            "X-Chunk-Size": "110",
            "X-Content-SHA256": "AB" * 32,
        }
    )
    read = parse_tail_answer(sealed, 3, 100, b"0123456,9\n")
    assert (read.size, read.sha256) == (110, "ab" * 32)
    del sealed["X-Chunk-Size"]
    with pytest.raises(PiError, match="X-Chunk-Size"):
        parse_tail_answer(sealed, 3, 100, b"0123456,9\n")


def test_ranges_must_start_where_the_part_ends() -> None:
    check_content_range("bytes 100-199/200", 100, 200, "c")
    check_content_range("bytes 100-199/*", 100, 200, "c")
    with pytest.raises(PiError, match="asked for bytes from 100"):
        check_content_range("bytes 0-199/200", 100, 200, "c")
    with pytest.raises(PiError, match="manifest says 300"):
        check_content_range("bytes 100-199/200", 100, 300, "c")
    with pytest.raises(PiError, match="asked for bytes"):
        check_content_range("", 100, 200, "c")
