"""`gateway demo` as a newcomer runs it, and the README's copy-paste example against it.

The demo runs as a real process in a scratch directory; the README's shell block runs under bash
with curl, exactly as written but for the port, and must print police data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli.demo import demo_example

README_BASE = "http://127.0.0.1:8000"
_BLOCK = re.compile(r"<!-- demo-example:start -->\s*```sh\n(.*?)```\s*<!-- demo-example:end -->", re.DOTALL)


def readme_example(repo_root: Path) -> str:
    match = _BLOCK.search((repo_root / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no demo-example block"
    return match.group(1)


def test_readme_example_is_what_the_demo_prints(repo_root: Path) -> None:
    assert readme_example(repo_root) == demo_example(README_BASE)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[str]:
    gateway = Path(sys.executable).parent / "gateway"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    log = (tmp_path / "demo.log").open("w")
    process = subprocess.Popen(
        [str(gateway), "demo", "--people", "400", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"gateway demo exited: {(tmp_path / 'demo.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("gateway demo did not serve within 90 s")
            time.sleep(0.25)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.mark.e2e
def test_the_readme_example_returns_police_data_from_the_demo(
    running_demo: str, tmp_path: Path, repo_root: Path
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = readme_example(repo_root).replace(README_BASE, running_demo)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert "errors" not in body, body
    edges = body["data"]["people"]["edges"]
    assert len(edges) == 3
    for edge in edges:
        node = edge["node"]
        assert set(node) == {"ref", "givenName", "familyName", "dateOfBirth", "postcode", "withheld"}
        assert node["ref"].startswith("per_") and node["givenName"] and node["familyName"]

    clients = json.loads((tmp_path / "var" / "demo-clients.json").read_text())
    assert set(clients) == {
        "police-prevention", "dwp-worklessness", "ons-evaluation",
        "family-hub-outreach", "youth-justice", "mash-safeguarding", "security-audit",
    }  # fmt: skip
    metadata = httpx.get(f"{running_demo}/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint"] == f"{running_demo}/oauth/token"

    # The demo keeps its witness beside its database, and the ledger verifies against it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    verified = subprocess.run(
        [str(Path(sys.executable).parent / "gateway"), "audit", "verify", "--witness", "var/witness"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the witness agrees" in verified.stdout
