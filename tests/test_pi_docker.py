"""The BlueOS extension image description: LABELs parse and ask for what the service needs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"
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


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` any depth, `*` and `?` within one name."""
    parts = re.split(r"(\*\*|\*|\?)", pattern.strip("/"))
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts))


def sent_to_docker(path: str, rules: list[str]) -> bool:
    """Whether the build context keeps `path`: the last rule matching it or a parent decides."""
    prefixes = [path.rsplit("/", n)[0] for n in range(path.count("/") + 1)]
    kept = True
    for rule in rules:
        negated = rule.startswith("!")
        regex = _ignore_regex(rule.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            kept = negated
    return kept


def test_every_copied_file_is_in_the_build_context() -> None:
    """docker/Dockerfile.dockerignore keeps out everything not re-included: each file a COPY
    names must be re-included, or the build stops with "not found"."""
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not sent_to_docker("tests/test_pi_docker.py", rules)  # the matcher can say no
    copied = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied += words[1:-1]
    assert {"pyproject.toml", "LICENSE", "qsensor_pi"} <= set(copied)
    for source in copied:
        files = [source] if (ROOT / source).is_file() else []
        files += [
            str(f.relative_to(ROOT))
            for f in (ROOT / source).rglob("*")
            if f.is_file() and "__pycache__" not in f.parts
        ]
        assert files, f"COPY {source}: nothing in the repository"
        left_out = [f for f in files if not sent_to_docker(f, rules)]
        assert not left_out, f"COPY {source}: the build context leaves out {left_out[:5]}"
