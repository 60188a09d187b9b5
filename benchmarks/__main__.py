"""`python -m benchmarks [name ...]`: run every `benchmarks/*_bench.py`, or the ones named.

Each module's `main()` is called in turn with `sys.argv` holding only its name, so it runs
with its defaults. A benchmark that fails is reported and the others still run.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

SUFFIX = "_bench"


def available() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob(f"*{SUFFIX}.py"))


def run(name: str) -> bool:
    """Run one benchmark; False when it raised."""
    print(f"=== {name} ===", flush=True)
    started = time.monotonic()
    module = importlib.import_module(f"{__package__}.{name}")
    saved, sys.argv = sys.argv, [name]
    try:
        module.main()
    except Exception:
        traceback.print_exc()
        print(f"=== {name} FAILED after {time.monotonic() - started:.0f} s ===\n", flush=True)
        return False
    finally:
        sys.argv = saved
    print(f"=== {name} done in {time.monotonic() - started:.0f} s ===\n", flush=True)
    return True


def main(argv: list[str]) -> int:
    known = available()
    names = [n if n.endswith(SUFFIX) else n + SUFFIX for n in argv] or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}")
        return 2
    try:
        failed = [name for name in names if not run(name)]
    except KeyboardInterrupt:
        print("\ninterrupted; the processes the benchmark started were stopped")
        return 130
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
