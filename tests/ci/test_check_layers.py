"""`.ci/check_layers.py` on small trees of its own: each kind of fault it exists to catch makes it fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / ".ci" / "check_layers.py"

# A tree shaped like the project: one module per layer, and a gateway with a part in every tier.
CLEAN = {
    "policies/__init__.py": "",
    "resolvers/__init__.py": "import policies\n",
    "schema/__init__.py": "import resolvers\n",
    "gateway/__init__.py": "from gateway.app import create_app\n",
    "gateway/config.py": "import policies\n",
    "gateway/db.py": "",
    "gateway/http.py": "",
    "gateway/keys.py": "",
    "gateway/logs.py": "def configure():\n    from gateway.telemetry import Filter\n",
    "gateway/telemetry.py": "Filter = object\n",
    "gateway/migrations/env.py": "",
    "gateway/audit/__init__.py": "from gateway.audit.writer import Writer\n",
    "gateway/audit/writer.py": "from gateway.keys import ALGORITHM\nWriter = object\n",
    "gateway/oauth/__init__.py": "from gateway.oauth.server import Server\n",
    "gateway/oauth/server.py": "from gateway.http import read_body\nServer = object\n",
    "gateway/graphql.py": "from gateway.oauth import Server\nimport schema\n",
    "gateway/routes.py": "from gateway.graphql import Endpoint\nfrom gateway.audit import Writer\n",
    "gateway/app.py": "from gateway.routes import build_routes\n",
    "gateway/cli/__init__.py": "from gateway.cli.main import main\n",
    "gateway/cli/main.py": "from gateway.app import create_app\nfrom gateway.audit import Writer\n",
}


def _check(tmp_path: Path, changes: dict[str, str]) -> tuple[int, str]:
    for name, body in {**CLEAN, **changes}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(CHECK)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout


def test_a_clean_tree_passes_and_the_order_checked_is_printed(tmp_path: Path) -> None:
    status, out = _check(tmp_path, {})
    assert status == 0, out
    assert "layers: policies <- resolvers <- schema <- gateway" in out
    assert "gateway: base (" in out
    assert (
        "<- subsystems (audit, bulk, guard, oauth, rights, sharing) "
        "<- endpoints (batches, console, graphql, health, reviews, routes) <- app (app, gateway) <- cli (cli)"
        in out
    )
    assert "no cycles" in out


@pytest.mark.parametrize(
    ("changes", "fault"),
    [
        pytest.param(
            {"resolvers/__init__.py": "import schema\n"},
            "resolvers/__init__.py:1 imports schema (a layer above resolvers)",
            id="a layer imports the one above",
        ),
        pytest.param(
            {"gateway/oauth/server.py": "from gateway.routes import build_routes\n"},
            "gateway/oauth/server.py:1 imports gateway.routes (endpoints, a tier above subsystems)",
            id="a subsystem imports an endpoint",
        ),
        pytest.param(
            {"gateway/http.py": "def later():\n    from gateway.audit import Writer\n"},
            "gateway/http.py:2 imports gateway.audit (subsystems, a tier above base)",
            id="an import inside a function counts",
        ),
        pytest.param(
            {"gateway/app.py": "import gateway.cli.main\n"},
            "gateway/app.py:1 imports gateway.cli (cli, a tier above app)",
            id="the app imports the CLI",
        ),
        pytest.param(
            {"gateway/reports/__init__.py": ""},
            "gateway part 'reports' is in no tier",
            id="a new part must be placed",
        ),
        pytest.param(
            {
                "gateway/audit/writer.py": "from gateway.oauth.server import Server\nWriter = object\n",
                "gateway/oauth/server.py": "from gateway.audit.events import Event\nServer = object\n",
                "gateway/audit/events.py": "Event = object\n",
            },
            "gateway parts import each other: gateway.audit <-> gateway.oauth",
            id="two parts of one tier import each other",
        ),
        pytest.param(
            {
                "gateway/db.py": "from gateway.keys import ALGORITHM\n",
                "gateway/keys.py": "from gateway.db import create_engine\n",
            },
            "import cycle between modules: gateway.db -> gateway.keys -> gateway.db",
            id="a cycle of modules",
        ),
    ],
)
def test_each_fault_fails_the_check(tmp_path: Path, changes: dict[str, str], fault: str) -> None:
    status, out = _check(tmp_path, changes)
    assert status == 1, out
    assert fault in out


def test_imports_only_for_type_checking_are_ignored(tmp_path: Path) -> None:
    status, out = _check(
        tmp_path,
        {"gateway/http.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway.app\n"},
    )
    assert status == 0, out


def test_the_project_itself_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(CHECK)],
        cwd=CHECK.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout
