"""The files of deploy/: every YAML file parses, and README.md is true to them (its table names every
file, its probes and healthcheck are the manifests')."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.manifests import DEPLOY, documents, kubernetes_object, pod_spec, yaml_files

README = DEPLOY / "README.md"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert documents(path), f"{path.name} holds no document"


def _listed() -> list[str]:
    """The first cell of every row of the file table: a path under deploy/, a folder ending in /."""
    return re.findall(r"^\| `([^`]+)` \|", README.read_text(encoding="utf-8"), re.MULTILINE)


def test_every_listed_file_exists() -> None:
    listed = _listed()
    assert len(listed) == len(set(listed))
    missing = [name for name in listed if not (DEPLOY / name).exists()]
    assert not missing
    assert all((DEPLOY / name).is_dir() == name.endswith("/") for name in listed)


def test_every_file_is_listed() -> None:
    listed = _listed()
    folders = [name for name in listed if name.endswith("/")]
    unlisted = [
        str(path.relative_to(DEPLOY))
        for path in sorted(DEPLOY.rglob("*"))
        if path.is_file()
        and path != README
        and "__pycache__" not in path.parts
        and str(path.relative_to(DEPLOY)) not in listed
        and not any(str(path.relative_to(DEPLOY)).startswith(folder) for folder in folders)
    ]
    assert not unlisted, f"not in deploy/README.md's table: {unlisted}"


def test_probes_are_the_ones_the_deployment_has() -> None:
    """An operator found the README and the probes disagreeing once: each probe's path is the one written."""
    text = README.read_text(encoding="utf-8")
    [container] = pod_spec(kubernetes_object("Deployment", "gateway"))["containers"]
    for kind in ("readiness", "liveness", "startup"):
        path = container[f"{kind}Probe"]["httpGet"]["path"]
        assert f"{kind} on `{path}`" in text.lower()
        described = re.findall(rf"{kind} on `(/[a-z]+)`", text, re.IGNORECASE)
        assert set(described) == {path}, f"README says {kind} on {described}, the Deployment {path}"


def test_healthcheck_path_is_the_dockerfiles() -> None:
    text = README.read_text(encoding="utf-8")
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    [path] = re.findall(r"urlopen\('http://127\.0\.0\.1:8000(/[a-z]+)'", dockerfile)
    assert f"a HEALTHCHECK on `{path}`" in text
    assert set(re.findall(r"HEALTHCHECK on `(/[a-z]+)`", text)) == {path}
