"""The deployment files shipped in deploy/ work with the code as it is."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from qsensor_topside.cli import main as topside_main
from qsensor_topside.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


def test_example_topside_settings_load() -> None:
    config = load_config(DEPLOY / "topside.toml", {})
    assert [v.name for v in config.vehicles] == ["rov"]
    assert config.bwlimit == 500 * 1024


def test_systemd_unit_runs_a_real_topside_command(capsys: pytest.CaptureFixture[str]) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "qsensor-topside.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(argv[0]).name == "qsensor-topside"
    # The same arguments must parse: `--help` after them stops before anything runs.
    with pytest.raises(SystemExit) as done:
        topside_main([*argv[1:], "--help"])
    assert done.value.code == 0
    assert "--config" in capsys.readouterr().out
