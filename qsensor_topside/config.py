"""Daemon settings: defaults, then a TOML file, then command-line options (last one wins).

TOML example::

    data = "/home/pilot/qsensor-data"
    bwlimit = "500K"
    [[vehicle]]
    name = "rov1"
    url = "http://192.168.2.2/extensionv2/qsensor"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from qsensor_topside.bwlimit import parse_bwlimit, parse_size

DEFAULT_STATUS_PORT = 9160
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Rate = Annotated[int, BeforeValidator(parse_bwlimit)]
Size = Annotated[int, BeforeValidator(parse_size)]


class ConfigError(ValueError):
    """A setting is missing or invalid; the message says which and why."""


class VehicleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _NAME.match(name) or ".." in name:
            raise ValueError(f"vehicle name {name!r}: use letters, digits, '.', '_' or '-'")
        return name

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"vehicle URL {url!r}: expected http://host[:port][/path]")
        return url.rstrip("/")


class TopsideConfig(BaseModel):
    """Everything `qsensor-topside run` needs; the field names are also the TOML keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path
    vehicles: list[VehicleSpec] = Field(min_length=1)
    bwlimit: Rate = 500 * 1024
    status_host: str = "127.0.0.1"
    status_port: int = Field(DEFAULT_STATUS_PORT, ge=0, le=65535)
    poll_interval: float = Field(15.0, gt=0)
    tail_interval: float = Field(1.0, gt=0)
    min_free: Size = 256 * 2**20
    retry_initial: float = Field(1.0, gt=0)
    retry_max: float = Field(60.0, gt=0)
    timeout: float = Field(10.0, gt=0)

    @field_validator("vehicles")
    @classmethod
    def _unique_names(cls, vehicles: list[VehicleSpec]) -> list[VehicleSpec]:
        names = [v.name for v in vehicles]
        if len(set(names)) != len(names):
            raise ValueError(f"vehicle names must be unique: {names}")
        return vehicles


def vehicle_from_arg(text: str) -> VehicleSpec:
    """`URL` or `NAME=URL` (the form of `--vehicle`)."""
    name, sep, url = text.partition("=")
    if sep and "/" not in name and ":" not in name:
        return VehicleSpec(name=name, url=url)
    return VehicleSpec(name=vehicle_name(text), url=text)


def vehicle_name(url: str) -> str:
    """A folder name from a URL: host_port plus the path, e.g. `192.168.2.2_80_extensionv2`."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pieces = [parts.hostname or "vehicle", str(port), *parts.path.strip("/").split("/")]
    name = "_".join(p for p in pieces if p)
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-")[:100] or "vehicle"


def load_config(config_file: Path | None, overrides: dict[str, Any]) -> TopsideConfig:
    """Defaults < TOML file < `overrides` (command-line values; None means not given)."""
    settings: dict[str, Any] = {}
    if config_file is not None:
        settings.update(_read_toml(config_file))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TopsideConfig.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    vehicles = raw.pop("vehicle", None)
    if vehicles is not None:
        if not isinstance(vehicles, list):
            raise ConfigError(f"{path}: use [[vehicle]] tables with url = ... and optional name")
        raw["vehicles"] = [_toml_vehicle(v) for v in vehicles]
    if "data" in raw:
        raw["data"] = path.parent / Path(str(raw["data"])).expanduser()
    return raw


def _toml_vehicle(table: Any) -> Any:
    if isinstance(table, dict) and "url" in table and "name" not in table:
        return {**table, "name": vehicle_name(str(table["url"]))}
    return table


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        lines.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(lines)
