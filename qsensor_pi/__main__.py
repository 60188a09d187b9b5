"""`python -m qsensor_pi serve ...`."""

from __future__ import annotations

import sys

from qsensor_pi.cli import main

sys.exit(main())
