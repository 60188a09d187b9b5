"""`python -m qsensor_core.simulator`: the same as `qsensor-sim`."""

from __future__ import annotations

from qsensor_core.simulator.cli import main

raise SystemExit(main())
