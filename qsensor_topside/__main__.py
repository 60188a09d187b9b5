"""`python -m qsensor_topside` is `qsensor-topside`."""

from __future__ import annotations

import sys

from qsensor_topside.cli import main

sys.exit(main())
