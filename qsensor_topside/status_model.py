"""What the daemon reports about itself: the status API's JSON shapes (pydantic).

Lag is defined as the topside's wall clock now minus the `timestamp` of the newest row the
topside holds (tailed or verified), with no correction: with synchronised clocks it is the
delay from the Pi stamping a reading to that reading being on the topside's disk; an offset
between the two clocks adds to it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

LinkState = Literal["connecting", "up", "down"]


class ChunkFailure(BaseModel):
    """A chunk that failed and is not verified yet; it stays in the plan and is retried."""

    session_id: str
    name: str
    attempts: int
    last_error: str
    retry_in_s: float


class SessionStatus(BaseModel):
    session_id: str
    state: str  # the Pi's: recording, stopped, interrupted (or the local copy's when offline)
    mission: str | None
    chunks_total: int  # sealed chunks the Pi lists
    chunks_verified: int
    chunks_pending: int
    chunks_failed: int
    bytes_mirrored: int  # verified chunks plus bytes held in .part files
    backlog_bytes: int  # sealed bytes not yet held
    tail_chunk: str | None  # the open chunk being followed while recording
    newest_timestamp: str | None
    lag_s: float | None  # only while recording; see the module docstring
    complete: bool  # stopped/interrupted and every chunk verified


class VehicleStatus(BaseModel):
    name: str
    url: str
    link: LinkState
    events: Literal["connected", "disconnected"]
    last_contact: str | None
    last_contact_age_s: float | None
    last_error: str | None
    disk_alert: str | None
    bandwidth_bps: float
    bytes_received: int  # since the daemon started
    backlog_bytes: int
    chunks_verified: int
    chunks_pending: int
    chunks_failed: int
    failures: list[ChunkFailure]
    sessions: list[SessionStatus]


class DaemonStatus(BaseModel):
    pid: int
    started_at: str
    data_dir: str
    bwlimit_bps: int  # 0 = unlimited
    bandwidth_bps: float
    bytes_received: int
    disk_free_bytes: int
    min_free_bytes: int
    alerts: list[str]
    vehicles: list[VehicleStatus]
