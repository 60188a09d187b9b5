"""`qsensor-pi serve`: run the recording service (on the vehicle, or on a simulated sensor)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from qsensor_core.clock import Clock
from qsensor_core.sensor import protocol
from qsensor_pi.app import create_app
from qsensor_pi.service import ServiceSettings

DEFAULT_PORT = 9150


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qsensor-pi", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("QSENSOR_DATA", "qsensor-data")),
        help="sessions and the last used port (default: $QSENSOR_DATA or ./qsensor-data)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--serial", metavar="PATH", help="connect to this port at start-up")
    source.add_argument(
        "--simulate", action="store_true", help="run a simulated sensor on a pty and use it"
    )
    serve.add_argument("--baud", type=int, default=9600, choices=protocol.VALID_BAUDS)
    sim = serve.add_argument_group("simulator (with --simulate)")
    sim.add_argument("--sim-mode", default="freerun", choices=("freerun", "polled"))
    sim.add_argument("--sim-averaging", type=int, default=125)
    sim.add_argument("--sim-adc-rate", type=int, default=125, choices=protocol.VALID_ADC_RATES)
    sim.add_argument("--sim-time-scale", type=float, default=1.0, help="scales device delays")
    sim.add_argument("--sim-truth-log", type=Path, help="CSV of every line the simulator wrote")
    sim.add_argument("--sim-seed", type=int)
    return ap


@contextlib.contextmanager
def _simulator(args: argparse.Namespace) -> Iterator[str]:
    """The simulator's port path, for as long as the service runs."""
    from qsensor_core.simulator.process import SimulatorProcess

    options: dict[str, object] = {
        "mode": args.sim_mode,
        "averaging": args.sim_averaging,
        "adc_rate": args.sim_adc_rate,
        "time_scale": args.sim_time_scale,
        "truth_log": args.sim_truth_log,
        "seed": args.sim_seed,
    }
    with SimulatorProcess(**options) as sim:
        yield sim.link


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts so port 0 can be announced.

    It must say IPPROTO_TCP: asyncio sets TCP_NODELAY only on TCP-labelled sockets, and without
    it every answer on a kept-alive connection waits ~40 ms for a delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _after_shutdown(signum: int, frame: object) -> None:
    """uvicorn re-raises the signal that stopped it once shutdown is done; the signal has been
    honoured by then, so let the simulator and socket clean-up run and exit 0."""


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        clock = Clock.from_env()
    except ValueError as exc:
        print(f"qsensor-pi: bad QSENSOR_CLOCK_* environment value: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        serial_port, remember = args.serial, True
        if args.simulate:
            serial_port, remember = stack.enter_context(_simulator(args)), False
        settings = ServiceSettings(
            data_dir=args.data, serial_port=serial_port, baud=args.baud, remember_port=remember
        )
        try:
            sock = stack.enter_context(listen_socket(args.host, args.port))
        except OSError as exc:
            print(f"qsensor-pi: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        host, port = sock.getsockname()[:2]
        print(f"qsensor-pi listening on http://{host}:{port}", flush=True)
        config = uvicorn.Config(
            create_app(settings, clock), log_level=args.log_level, access_log=False, lifespan="on"
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _after_shutdown)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
