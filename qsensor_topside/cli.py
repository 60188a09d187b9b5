"""`qsensor-topside run ...` (the mirror daemon) and `qsensor-topside status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx

from qsensor_topside.config import (
    DEFAULT_STATUS_PORT,
    ConfigError,
    load_config,
    vehicle_from_arg,
)
from qsensor_topside.daemon import AlreadyRunning, run_daemon
from qsensor_topside.progress import BarAwareHandler, CatchUpBar
from qsensor_topside.status import render_text
from qsensor_topside.status_model import DaemonStatus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsensor-topside", description="Live mirror of the vehicles' Q-sensor recordings."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="mirror one or more vehicles until stopped")
    run.add_argument(
        "--vehicle",
        action="append",
        metavar="[NAME=]URL",
        help="the Pi service's base URL; repeat for several vehicles",
    )
    run.add_argument("--data", type=Path, help="folder for the mirrored files")
    run.add_argument(
        "--bwlimit",
        help='bandwidth cap for all transfers, e.g. "500K", "2M", "0" = unlimited (default 500K)',
    )
    run.add_argument("--config", type=Path, help="TOML settings file (options here win)")
    run.add_argument(
        "--status-port", type=int, help=f"status API port (default {DEFAULT_STATUS_PORT})"
    )
    run.add_argument("--poll-interval", type=float, help="seconds between reconciles (default 15)")
    run.add_argument(
        "--tail-interval", type=float, help="seconds between live-tail reads (default 1)"
    )
    run.add_argument("--min-free", help='stop fetching below this free disk space (default "256M")')
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")

    status = commands.add_parser("status", help="print the running daemon's status")
    status.add_argument("--status-port", type=int, help=f"default {DEFAULT_STATUS_PORT}")
    status.add_argument("--config", type=Path, help="read status_host/status_port from it")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _status(args)


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        "data": args.data,
        "bwlimit": args.bwlimit,
        "status_port": args.status_port,
        "poll_interval": args.poll_interval,
        "tail_interval": args.tail_interval,
        "min_free": args.min_free,
    }
    try:
        if args.vehicle:
            overrides["vehicles"] = [vehicle_from_arg(v) for v in args.vehicle]
        config = load_config(args.config, overrides)
    except (ConfigError, ValueError) as exc:
        print(f"qsensor-topside: {exc}", file=sys.stderr)
        return 2
    bar = CatchUpBar(sys.stderr) if sys.stderr.isatty() and not args.no_progress else None
    _setup_logging(args.log_level, bar)
    try:
        asyncio.run(_until_signalled(run_daemon(config, bar=bar)))
    except (AlreadyRunning, OSError) as exc:
        print(f"qsensor-topside: {exc}", file=sys.stderr)
        return 1
    return 0


async def _until_signalled(daemon: Any) -> None:
    task = asyncio.ensure_future(daemon)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    logging.getLogger("qsensor_topside").info("stopped")


def _setup_logging(level: str, bar: CatchUpBar | None) -> None:
    handler = BarAwareHandler(bar) if bar is not None else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("qsensor_topside").setLevel(level.upper())


def _status(args: argparse.Namespace) -> int:
    host, port = "127.0.0.1", DEFAULT_STATUS_PORT
    if args.config is not None:
        try:
            settings = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            print(f"qsensor-topside: cannot read config {args.config}: {exc}", file=sys.stderr)
            return 2
        host = str(settings.get("status_host", host))
        port = int(settings.get("status_port", port))
    if args.status_port is not None:
        port = args.status_port
    url = f"http://{host}:{port}/status"
    try:
        response = httpx.get(url, timeout=10.0)
        response.raise_for_status()
        status = DaemonStatus.model_validate(response.json())
    except httpx.HTTPError as exc:
        print(
            f"qsensor-topside: the daemon is not running (no status API at {url}: {exc})",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(status.model_dump(), indent=2) if args.json else render_text(status))
    return 0
