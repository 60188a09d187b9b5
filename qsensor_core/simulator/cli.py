"""`qsensor-sim`: serve a simulated sensor on a pty reachable through a symlink."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from qsensor_core.simulator.firmware import DeviceSettings
from qsensor_core.simulator.runtime import RuntimeOptions, Simulator, load_state

BENCH_SPEEDUP_MAX = 100.0

# CLI option -> DeviceSettings field, for options that set the device's saved settings.
_SETTING_OPTIONS = {
    "mode": "mode",
    "tag": "tag",
    "adc_rate": "adc_rate",
    "averaging": "averaging",
    "baud": "baud",
    "serial_number": "serial_number",
    "preamble": "preamble",
    "temp": "temp_output",
    "vin": "vin_output",
    "quiet_banner": "quiet",
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="qsensor-sim",
        description="Simulated Biospherical Q-Series sensor (firmware 4.003) on a pseudo-terminal.",
    )
    ap.add_argument("--link", type=Path, required=True, help="symlink to create to the pty")
    dev = ap.add_argument_group("device settings (override a --state file)")
    dev.add_argument("--mode", choices=("freerun", "polled"))
    dev.add_argument("--tag", type=str.upper, help="polling tag A-Z")
    dev.add_argument("--adc-rate", type=int)
    dev.add_argument("--averaging", type=int)
    dev.add_argument("--baud", type=int, help="stored setting only; bytes are not paced")
    dev.add_argument("--serial-number")
    dev.add_argument("--preamble")
    dev.add_argument("--temp", action=argparse.BooleanOptionalAction, help="temperature output")
    dev.add_argument("--vin", action=argparse.BooleanOptionalAction, help="supply voltage output")
    dev.add_argument(
        "--quiet-banner", action=argparse.BooleanOptionalAction, help="no banner on restart"
    )
    sim = ap.add_argument_group("simulation")
    sim.add_argument("--ppm", type=float, default=0.0, help="sampling clock error in ppm")
    sim.add_argument(
        "--bench-speedup",
        type=float,
        default=1.0,
        metavar="F",
        help="benchmarks only: divides the sampling period by F (beyond any real device)",
    )
    sim.add_argument("--time-scale", type=float, default=1.0, help="multiplies the device's delays")
    sim.add_argument("--garbage-rate", type=float, default=0.0, help="garbage lines per data line")
    sim.add_argument("--unplug-after", type=float, metavar="SECONDS")
    sim.add_argument("--unplug-for", type=float, metavar="SECONDS")
    sim.add_argument("--truth-log", type=Path, help="CSV of every data line written")
    sim.add_argument("--state", type=Path, help="JSON file keeping saved settings")
    sim.add_argument("--seed", type=int)
    return ap


def _settings(args: argparse.Namespace) -> DeviceSettings:
    """Defaults, then the state file, then the options given on the command line."""
    values = load_state(args.state) if args.state else {}
    for option, field in _SETTING_OPTIONS.items():
        given = getattr(args, option)
        if given is not None:
            values[field] = given
    return DeviceSettings.model_validate(values)


def _check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.time_scale < 0:
        ap.error("--time-scale must be >= 0")
    if not 0 <= args.garbage_rate <= 1:
        ap.error("--garbage-rate must be between 0 and 1")
    if not -500_000 < args.ppm < 500_000:
        ap.error("--ppm must be within +-500000")
    if not 1 <= args.bench_speedup <= BENCH_SPEEDUP_MAX:
        ap.error(f"--bench-speedup must be between 1 and {BENCH_SPEEDUP_MAX}")
    for name in ("unplug_after", "unplug_for"):
        value = getattr(args, name)
        if value is not None and value < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.unplug_for is not None and args.unplug_after is None:
        ap.error("--unplug-for needs --unplug-after")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check(ap, args)
    try:
        settings = _settings(args)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        detail = exc.errors() if isinstance(exc, ValidationError) else exc
        print(f"qsensor-sim: bad settings: {detail}", file=sys.stderr)
        return 2
    options = RuntimeOptions(
        link=args.link,
        time_scale=args.time_scale,
        ppm=args.ppm,
        bench_speedup=args.bench_speedup,
        garbage_rate=args.garbage_rate,
        unplug_after=args.unplug_after,
        unplug_for=args.unplug_for,
        truth_log=args.truth_log,
        state=args.state,
        seed=args.seed,
    )

    def ready(link: str) -> None:
        print(link, flush=True)

    try:
        Simulator(settings, options).run(ready)
    except OSError as exc:  # the link cannot be made, the state or truth file cannot be written
        print(f"qsensor-sim: {exc}", file=sys.stderr)
        return 1
    return 0
