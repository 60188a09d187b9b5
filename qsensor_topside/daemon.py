"""Assembles the daemon: one shared token bucket, one mirror per vehicle, the status API."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from qsensor_topside.bwlimit import format_rate
from qsensor_topside.client import PiClient, make_http
from qsensor_topside.config import TopsideConfig
from qsensor_topside.mirror import VehicleMirror
from qsensor_topside.progress import CatchUpBar
from qsensor_topside.status import StatusBoard, bind_status_socket, serve_status
from qsensor_topside.store import VehicleStore
from qsensor_topside.token_bucket import RateMeter, TokenBucket

log = logging.getLogger("qsensor_topside")
LOCK_NAME = ".qsensor-topside.lock"
PROGRESS_INTERVAL_S = 1.0


class AlreadyRunning(RuntimeError):
    """Another daemon mirrors into the same data folder."""


@contextlib.contextmanager
def data_lock(data_dir: Path) -> Iterator[None]:
    """One daemon per data folder: two would write the same `.part` files."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = handle.read().strip() or "?"
            raise AlreadyRunning(
                f"another qsensor-topside (pid {other}) is mirroring into {data_dir}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


async def run_daemon(config: TopsideConfig, *, bar: CatchUpBar | None = None) -> None:
    """Mirror every configured vehicle until cancelled."""
    with data_lock(config.data):
        sock = bind_status_socket(config.status_host, config.status_port)
        bucket = TokenBucket(config.bwlimit)
        total = RateMeter()
        mirrors: list[VehicleMirror] = []
        async with contextlib.AsyncExitStack() as stack:
            for spec in config.vehicles:
                http = await stack.enter_async_context(
                    make_http(spec.url, timeout=config.timeout, rate=config.bwlimit)
                )
                meter = RateMeter()
                client = PiClient(http, bucket, (meter, total))
                store = VehicleStore(config.data / spec.name)
                mirrors.append(VehicleMirror(spec, store, client, config, meter))
            board = StatusBoard(config.data, config.bwlimit, config.min_free, mirrors, total)
            host, port = sock.getsockname()[:2]
            log.info(
                "mirroring %d vehicle(s) into %s, bandwidth limit %s, status on http://%s:%d/status",
                len(mirrors),
                config.data,
                format_rate(config.bwlimit),
                host,
                port,
            )
            for mirror in mirrors:
                log.info("vehicle %s: %s -> %s", mirror.name, mirror.spec.url, mirror.store.root)
            async with asyncio.TaskGroup() as group:
                group.create_task(serve_status(board, sock), name="status-api")
                for mirror in mirrors:
                    group.create_task(mirror.run(), name=f"mirror-{mirror.name}")
                if bar is not None:
                    group.create_task(_show_progress(board, bar), name="progress")


async def _show_progress(board: StatusBoard, bar: CatchUpBar) -> None:
    while True:
        status = await board.snapshot()
        backlog = sum(v.backlog_bytes for v in status.vehicles)
        bar.update(backlog, status.bytes_received, status.bandwidth_bps)
        await asyncio.sleep(PROGRESS_INTERVAL_S)
