"""Where the deploy/ files are, read as the tools that use them read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
EXAMPLE_SECRET = "secret.example.yaml"


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def documents(path: Path) -> list[Any]:
    """Every YAML document in the file (merge keys applied, as compose applies them)."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kubernetes_objects(name: str) -> list[dict[str, Any]]:
    return documents(KUBERNETES / name)


def kubernetes_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name among the manifests (the example Secret included)."""
    found = [
        obj
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for obj in documents(path)
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def compose() -> dict[str, Any]:
    [doc] = documents(DEPLOY / "compose.yaml")
    return doc


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, Job or CronJob."""
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]
