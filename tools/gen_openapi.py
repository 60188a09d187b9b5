"""Writes docs/openapi.json, the generated API reference of `qsensor-pi` (`make docs`)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from qsensor_pi.app import create_app
from qsensor_pi.service import ServiceSettings

TARGET = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def openapi_text() -> str:
    with tempfile.TemporaryDirectory() as data:
        app = create_app(ServiceSettings(data_dir=Path(data)))
        return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    TARGET.write_text(openapi_text(), encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
