"""`gateway demo` as a newcomer runs it, and the README's copy-paste example against it.

The demo runs as a real process in a scratch directory laid out as the repository is (`.venv/bin`);
the README's shell block runs there under bash, exactly as written but for the port, and must print
police data, with the officer it names verified and in the ledger.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.cli.demo import demo_example
from tests.e2e.conftest import Demo

README_BASE = "http://127.0.0.1:8000"
_BLOCK = re.compile(r"<!-- demo-example:start -->\s*```sh\n(.*?)```\s*<!-- demo-example:end -->", re.DOTALL)


def readme_example(repo_root: Path) -> str:
    match = _BLOCK.search((repo_root / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no demo-example block"
    return match.group(1)


def test_readme_example_is_what_the_demo_prints(repo_root: Path) -> None:
    assert readme_example(repo_root) == demo_example(README_BASE)


@pytest.mark.e2e
def test_the_readme_example_returns_police_data_from_the_demo(running_demo: Demo, repo_root: Path) -> None:
    base, directory, env = running_demo.base, running_demo.directory, running_demo.env()
    script = readme_example(repo_root).replace(README_BASE, base)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=directory, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert "errors" not in body, body
    edges = body["data"]["people"]["edges"]
    assert len(edges) == 3
    for edge in edges:
        node = edge["node"]
        assert set(node) == {"ref", "givenName", "familyName", "dateOfBirth", "postcode"}
        assert node["ref"].startswith("per_") and node["givenName"] and node["familyName"]

    files = {path.stem: path for path in (directory / "var" / "demo-clients").glob("*.json")}
    assert set(files) == {
        "police-prevention", "dwp-worklessness", "ons-evaluation",
        "family-hub-outreach", "youth-justice", "mash-safeguarding", "public-health-planning",
        "school-attendance", "security-audit",
    }  # fmt: skip
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        written = json.loads(path.read_text())
        assert written["token_endpoint"] == f"{base}/oauth/token" and "d" in written["dpop_key"]
    metadata = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint"] == f"{base}/oauth/token"
    assert metadata["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]

    # The ledger names the officer the README's example named, verified by the police's issuer.
    gateway = str(Path(sys.executable).parent / "gateway")
    searched = subprocess.run(
        [gateway, "audit", "search", "--case", "CASE-2026-0001", "--outcome", "allowed", "--json"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr
    events = [e for e in json.loads(searched.stdout) if e["endpoint"] == "graphql"]
    assert len(events) == 1, [(e["client_id"], e["case_reference"], e["acting_user"]) for e in events]
    [event] = events
    assert (event["acting_user"], event["case_reference"], event["people_count"]) == (
        "pc-4471",
        "CASE-2026-0001",
        3,
    )

    # The demo keeps its witness beside its database, and the ledger verifies against it.
    verified = subprocess.run(
        [gateway, "audit", "verify", "--witness", "var/witness"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the witness agrees" in verified.stdout


def _post_form(
    client: httpx.Client, path: str, page: httpx.Response, cookie: str, **fields: str
) -> httpx.Response:
    """Post a console form with the CSRF token its page carried. The console's cookie is Secure: a
    browser sends it back to 127.0.0.1, httpx's jar would not, so it goes in the header."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    return client.post(path, data={"csrf": csrf.group(1), **fields}, headers={"Cookie": cookie})


@pytest.mark.e2e
def test_the_demo_prints_its_console_and_the_demo_sign_in_opens_it(running_demo: Demo) -> None:
    printed = (running_demo.directory / "demo.log").read_text(encoding="utf-8")
    assert f"The security console: {running_demo.base}/console/" in printed
    with httpx.Client(base_url=running_demo.base, timeout=30) as client:
        page = client.get("/console/sign-in")
        assert page.status_code == 200 and 'id="demo-sign-in"' in page.text
        first = page.headers["set-cookie"].split(";", 1)[0]
        signed = _post_form(client, "/console/sign-in/demo", page, first, identity="analyst")
        assert signed.status_code == 303 and signed.headers["location"] == "/console/purpose"
        session = signed.headers["set-cookie"].split(";", 1)[0]
        purpose = client.get("/console/purpose", headers={"Cookie": session})
        given = _post_form(client, "/console/purpose", purpose, session, case_reference="DEMO-1")
        assert given.status_code == 303
        timeline = client.get("/console/events", headers={"Cookie": session})
        assert timeline.status_code == 200 and 'id="events"' in timeline.text
