"""A gateway killed with SIGKILL leaves its chain open; the next gateway to start seals it, and
`gateway audit verify --strict --witness` passes and says where the dead writer stopped. Real
processes (`gateway serve`), real signals, real tokens; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.audit import verify_ledger
from gateway.db import create_engine
from gateway.keys import load_key_file
from tests.support.databases import postgres_database, sqlite_database

GATEWAY = str(Path(sys.executable).parent / "gateway")
PAGE = '{"query": "{ people(first: 5) { edges { node { ref } } } }"}'

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database() as url:
        port = _free_port()
        made = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_ISSUER": f"http://127.0.0.1:{port}",
            "GATEWAY_SIGNING_KEY_FILE": str(tmp_path / "signing.jwk.json"),
            "GATEWAY_REF_SECRET_FILE": str(tmp_path / "ref-secret"),
            "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness"),
            "PORT": str(port),
        }
        for command in (["keys", "generate"], ["db", "upgrade"], ["seed", "--people", "200"]):
            _gateway(made, tmp_path, *command)
        yield made


def _gateway(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [GATEWAY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


@contextmanager
def _serving(env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / f"serve-{time.monotonic_ns()}.log").open("wb")
    process = subprocess.Popen(
        [GATEWAY, "serve", "--port", env["PORT"]], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{env['PORT']}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway serve did not start: {log.name}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


async def test_a_killed_gateway_is_sealed_at_the_next_start_and_strict_passes(
    env: dict[str, str], tmp_path: Path
) -> None:
    client = json.loads(_gateway(env, tmp_path, "clients", "add", "--agreement", "police-prevention").stdout)
    base = f"http://127.0.0.1:{env['PORT']}"
    with _serving(env, tmp_path) as first:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            credentials = (client["client_id"], client["client_secret"])
            issued = await http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=credentials
            )
            token = issued.json()["access_token"]
            for _ in range(3):
                response = await http.post(
                    "/graphql", content=PAGE, headers={
                        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "X-Acting-User": "pc-1", "X-Case-Reference": "CASE-1",
                    },
                )  # fmt: skip
                assert response.status_code == 200, response.text
        dead_pid = first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    keys = load_key_file(Path(env["GATEWAY_SIGNING_KEY_FILE"])).verification
    engine = create_engine(env["GATEWAY_DATABASE_URL"])
    try:
        later = datetime.now(UTC) + timedelta(minutes=10)
        reports = await verify_ledger(engine, keys, strict_age=timedelta(minutes=5), now=later)
        [open_chain] = [r for r in reports if not r.ok]  # the dead writer's tail would fail --strict for ever
        assert "were never signed" in (open_chain.problem or "")
    finally:
        await engine.dispose()

    with _serving(env, tmp_path) as second:
        restarted_pid = second.pid  # it seals the dead chain as it starts; it serves nothing itself
    assert second.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once shut down

    done = await asyncio.to_thread(
        _gateway, env, tmp_path, "audit", "verify", "--strict", "--witness", env["GATEWAY_AUDIT_WITNESS"]
    )
    out = done.stdout
    assert re.search(
        rf"chain {open_chain.chain_id}: 4 events, \d+ checkpoints, closed after its writer stopped at "
        rf"event 4 \(writer gateway \(pid {dead_pid} on [^)]+\) died; "
        rf"sealed by gateway start-up on [^ ]+ \(pid {restarted_pid}\)\); events 1 to 4 were sealed "
        rf"without their writer's signature \(the witness cannot vouch for them\): intact",
        out,
    ), out
    assert "ledger intact: 1 chains, 4 events and the witness agrees" in out
