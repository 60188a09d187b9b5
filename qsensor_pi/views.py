"""Pure conversions of driver and recorder objects into the API's JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qsensor_core.recording import (
    ChunkInfo,
    Manifest,
    MarkerRow,
    RecorderStatus,
    SessionSummary,
    TailRead,
    chunk_name,
)
from qsensor_core.sensor.driver import SensorDriver
from qsensor_core.sensor.models import Reading, SensorConfig
from qsensor_pi.events import Event


def connect_answer(driver: SensorDriver, config: SensorConfig) -> dict[str, Any]:
    return {
        "status": "connected",
        "sensor_id": config.serial_number,
        "port": driver.port,
        "baud": driver.baud,
    }


def config_answer(config: SensorConfig) -> dict[str, Any]:
    return {
        "averaging": config.averaging,
        "adc_rate_hz": config.adc_rate,
        "mode": config.mode,
        "tag": config.tag,
        "sample_period_s": config.nominal_period_s,
        "serial_number": config.serial_number,
        "firmware": config.firmware,
        "temp_output": config.temp_output,
        "vin_output": config.vin_output,
    }


def driver_stats(driver: SensorDriver) -> dict[str, object]:
    stats = driver.stats
    return {
        "lines": stats.lines,
        "data": stats.data,
        "rejected": {str(kind): n for kind, n in stats.rejected.items()},
        "reconnects": stats.reconnects,
        "polls": stats.polls,
        "missed_polls": stats.missed_polls,
    }


CHUNK_FIELDS = ("index", "name", "size_bytes", "sha256", "rows")
SESSION_FIELDS = (
    "session_id",
    "state",
    "mission",
    "started_at",
    "stopped_at",
    "rows",
    "chunks",
    "bytes",
    "open_chunk",
)
LIVE_STATUS_FIELDS = ("session_id", "state", "rows", "bytes", "last_chunk_index", "backlog")


def chunk_json(chunk: ChunkInfo) -> dict[str, Any]:
    return chunk.model_dump(include=set(CHUNK_FIELDS))


def chunk_sealed_event(session_id: str, chunk: ChunkInfo) -> Event:
    """The SSE event a mirror resumes from: id `<session_id>/<index>`."""
    return Event(
        "chunk_sealed",
        {"session_id": session_id, **chunk_json(chunk)},
        id=f"{session_id}/{chunk.index}",
    )


def sealed_chunks(manifest: Manifest) -> list[dict[str, Any]]:
    """Sealed chunks of a session in order (the open one is never listed)."""
    return [chunk_json(c) for c in manifest.chunks]


@dataclass(frozen=True, slots=True)
class SessionFile:
    """What `/files` serves: a sealed chunk from disk, or the manifest's bytes as read."""

    sha256: str
    path: Path | None = None
    content: bytes | None = None


def chunk_sha256(manifest: Manifest, name: str) -> str | None:
    for chunk in manifest.chunks:
        if chunk.name == name:
            return chunk.sha256
    return None


def stop_answer(manifest: Manifest) -> dict[str, Any]:
    return {
        "session_id": manifest.session_id,
        "stopped_at": manifest.stopped_at,
        "chunks": manifest.totals.chunks,
        "rows": manifest.totals.rows,
    }


def live_status(status: RecorderStatus) -> dict[str, Any]:
    return status.model_dump(include=set(LIVE_STATUS_FIELDS))


def manifest_status(manifest: Manifest) -> dict[str, Any]:
    last = manifest.chunks[-1].index if manifest.chunks else None
    return {
        "session_id": manifest.session_id,
        "state": manifest.state,
        "rows": manifest.totals.rows,
        "bytes": manifest.totals.bytes,
        "last_chunk_index": last,
        "backlog": 0,
    }


def summary_json(summary: SessionSummary) -> dict[str, Any]:
    return summary.model_dump(include=set(SESSION_FIELDS))


def live_overlay(status: RecorderStatus) -> dict[str, Any]:
    """The live session's counts include its open chunk (the manifest only sealed ones)."""
    return {"rows": status.rows, "bytes": status.bytes, "open_chunk": status.open_chunk}


def marker_answer(row: MarkerRow) -> dict[str, Any]:
    return {
        "status": "injected",
        "timestamp": row.timestamp,
        "pi_monotonic_ns": row.mono_ns,
        "seq": row.seq,
    }


@dataclass(frozen=True, slots=True)
class TailAnswer:
    data: bytes
    headers: dict[str, str]


def tail_answer(index: int, tail: TailRead) -> TailAnswer:
    headers = {
        "X-Chunk-Name": chunk_name(index),
        "X-Chunk-State": tail.state,
        "X-Next-Offset": str(tail.next_offset),
    }
    if tail.state == "sealed":
        headers["X-Chunk-Size"] = str(tail.size_bytes)
        if tail.sha256 is not None:
            headers["X-Content-SHA256"] = tail.sha256
    return TailAnswer(tail.data, headers)


def reading_json(reading: Reading) -> dict[str, Any]:
    """The reading as the API shows it: field names of the existing Cockpit integration."""
    return {
        "timestamp": reading.timestamp,
        "sensor_id": reading.sensor_id,
        "mode": reading.mode,
        "value": reading.value,
        "TempC": reading.temp_c,
        "Vin": reading.vin,
        "seq": reading.seq,
        "pi_monotonic_ns": reading.mono_ns,
    }


def datalake_frames(reading: dict[str, Any]) -> list[str]:
    """`name=value` text frames (from `reading_json`) for Cockpit's WebSocket data lake."""
    frames = [f"qsensor_value={reading['value']}"]
    if reading.get("TempC") is not None:
        frames.append(f"qsensor_temp={reading['TempC']}")
    if reading.get("Vin") is not None:
        frames.append(f"qsensor_vin={reading['Vin']}")
    return frames
