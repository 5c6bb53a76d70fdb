"""A gateway killed with SIGKILL leaves its chain open; the next gateway to start seals it, and
`gateway audit verify --strict --witness` passes and says where the dead writer stopped. Real
processes (`gateway serve`), real signals, real tokens; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit import verify_ledger
from gateway.db import create_engine
from gateway.keys import load_key_file
from tests.support.databases import postgres_database, sqlite_database
from tests.support.processes import free_port, gateway, serving, trust

PAGE = "{ people(first: 5) { edges { node { ref } } } }"

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database() as url:
        port = free_port()
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
            gateway(made, tmp_path, *command)
        yield made


async def test_a_killed_gateway_is_sealed_at_the_next_start_and_strict_passes(
    env: dict[str, str], tmp_path: Path
) -> None:
    client_file = tmp_path / "ons.json"
    gateway(
        env, tmp_path, "clients", "add", "--agreement", "ons-evaluation", "--client-file", str(client_file)
    )
    trust(env, tmp_path, client_file, PAGE)  # ONS runs registered documents only
    with serving(env, tmp_path, int(env["PORT"])) as first:
        # Three runs of the reference client, as a partner runs it: each a token request refused for
        # want of a DPoP nonce, the retry with the nonce, and the query. Nine events.
        for _ in range(3):
            answered = await asyncio.to_thread(
                gateway,
                env,
                tmp_path,
                "partner",
                "query",
                "--client-file",
                str(client_file),
                "--query",
                PAGE,
            )
            assert len(json.loads(answered.stdout)["data"]["people"]["edges"]) == 5
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

    with serving(env, tmp_path, int(env["PORT"])) as second:
        restarted_pid = second.pid  # it seals the dead chain as it starts; it serves nothing itself
    assert second.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once shut down

    done = await asyncio.to_thread(
        gateway, env, tmp_path, "audit", "verify", "--strict", "--witness", env["GATEWAY_AUDIT_WITNESS"]
    )
    out = done.stdout
    assert re.search(
        rf"chain {open_chain.chain_id}: 9 events, \d+ checkpoints, closed after its writer stopped at "
        rf"event 9 \(writer gateway \(pid {dead_pid} on [^)]+\) died; "
        rf"sealed by gateway start-up on [^ ]+ \(pid {restarted_pid}\)\); events 1 to 9 were sealed "
        rf"without their writer's signature \(the witness cannot vouch for them\): intact",
        out,
    ), out
    assert "ledger intact: 1 chains, 9 events and the witness agrees" in out
