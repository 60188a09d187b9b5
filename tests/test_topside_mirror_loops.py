"""The mirror's loops against a Pi that fails: they back off instead of hammering it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qsensor_topside.client import PiClient, make_http
from qsensor_topside.config import TopsideConfig, VehicleSpec
from qsensor_topside.mirror import VehicleMirror
from qsensor_topside.plan import Retry
from qsensor_topside.store import VehicleStore
from qsensor_topside.token_bucket import RateMeter, TokenBucket

RUN_S = 2.0


async def _sync_against_a_dead_pi(data: Path) -> int:
    """Run the sync loop against a server that drops every connection; connections made."""
    connections = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.transport.abort()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    spec = VehicleSpec(name="rov", url=url)
    config = TopsideConfig(data=data, vehicles=[spec])
    meter = RateMeter()
    async with server, make_http(url, timeout=2.0, rate=0) as http:
        client = PiClient(http, TokenBucket(0), (meter,))
        mirror = VehicleMirror(spec, VehicleStore(data / "rov"), client, config, meter)
        # a chunk that failed before the Pi went away: its retry is due now
        mirror.retries[("s", "chunk_00000.csv")] = Retry(1, next_at=0.0, last_error="earlier")
        task = asyncio.create_task(mirror._sync_loop())
        await asyncio.sleep(RUN_S)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return connections


def test_sync_backs_off_while_the_pi_is_unreachable_even_with_a_retry_due(
    tmp_path: Path,
) -> None:
    connections = asyncio.run(_sync_against_a_dead_pi(tmp_path))
    # backoff from 1 s (jittered over 0.5-1 s), doubling: at most 3 passes in 2 s
    assert 1 <= connections <= 4
