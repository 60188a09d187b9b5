"""The BlueOS extension image description: LABELs parse and ask for what the service needs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parent.parent / "docker" / "Dockerfile"
JSON_LABELS = ("permissions", "tags", "authors", "company", "links")


def dockerfile_labels(text: str) -> dict[str, str]:
    """LABEL key=value pairs, continuation lines joined and quotes removed as Docker does."""
    joined = re.sub(r"\\\n", "", text)
    labels: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("LABEL "):
            for word in shlex.split(line[len("LABEL ") :]):
                key, _, value = word.partition("=")
                labels[key] = value
    return labels


@pytest.fixture(scope="module")
def labels() -> dict[str, str]:
    return dockerfile_labels(DOCKERFILE.read_text())


def test_labels_are_present_and_json_labels_parse(labels: dict[str, str]) -> None:
    for key in ("version", "type", "requirements", "readme", *JSON_LABELS):
        assert labels.get(key), f"missing LABEL {key}"
    parsed = {key: json.loads(labels[key]) for key in JSON_LABELS}
    assert isinstance(parsed["tags"], list) and all(isinstance(t, str) for t in parsed["tags"])
    assert all(a["name"] for a in parsed["authors"])
    assert parsed["company"]["name"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", labels["version"])


def test_permissions_give_the_port_the_devices_and_the_data_folder(
    labels: dict[str, str],
) -> None:
    permissions = json.loads(labels["permissions"])
    assert "9150/tcp" in permissions["ExposedPorts"]
    host = permissions["HostConfig"]
    assert host["PortBindings"] == {"9150/tcp": [{"HostPort": ""}]}
    assert host["Privileged"] is True
    assert "/dev:/dev" in host["Binds"]
    assert "/usr/blueos/extensions/qsensor:/data" in host["Binds"]
    assert 0 < host["CpuQuota"] <= host["CpuPeriod"]
    assert 64 * 2**20 <= host["Memory"] <= 2**30


def test_image_runs_the_service_on_the_labelled_port_and_data_folder() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    argv = json.loads(cmd.group(1))
    assert argv[:2] == ["qsensor-pi", "serve"]
    assert argv[argv.index("--port") + 1] == "9150"
    assert argv[argv.index("--data") + 1] == "/data"
    assert "--only-binary=:all:" in text  # wheels only: no compiler, any platform with wheels
