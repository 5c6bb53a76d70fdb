"""`gateway serve --workers 2` over PostgreSQL and Redis: what one worker accepts once, the other
refuses; a revoked token stops working in both; a client's requests per minute are counted once
across both; and `/metrics` sums both workers, whichever one a scrape reaches.

Every request goes on a new connection, so the kernel hands each to either worker; the ledger shows
afterwards that both workers answered (one audit chain each).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from gateway.cli.client_files import read_client_file
from gateway.db import create_engine
from tests.e2e.test_identity_across_processes import PAGE, Caller, _error
from tests.support.databases import postgres_database, redis_url
from tests.support.processes import (
    GATEWAY,
    agreements_with_hub_limits,
    free_port,
    gateway,
    gateway_env,
    serving,
    trust,
)

pytestmark = pytest.mark.e2e

HUB, PER_MINUTE = "family-hub-outreach", 8


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    agreements = agreements_with_hub_limits(
        tmp_path / "agreements", f"max_page_size: 100, requests_per_minute: {PER_MINUTE}"
    )
    async with postgres_database() as url:
        made = gateway_env(
            tmp_path, url, GATEWAY_AGREEMENTS_DIR=str(agreements), GATEWAY_REDIS_URL=await redis_url(),
            GATEWAY_DPOP_NONCE="false", GATEWAY_REQUESTS_PER_SECOND="1000",
        )  # fmt: skip
        for command in (["keys", "generate"], ["db", "upgrade"], ["seed", "--people", "100"]):
            gateway(made, tmp_path, *command)
        yield made


def _total(metrics: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name and set(labels.items()) <= set(sample.labels.items())
    )


async def test_two_workers_share_replay_stores_revocations_and_rate_limits(
    env: dict[str, str], tmp_path: Path
) -> None:
    ons_file, hub_file = tmp_path / "ons.json", tmp_path / "hub.json"
    gateway(env, tmp_path, "clients", "add", "--agreement", "ons-evaluation", "--client-file", str(ons_file))
    gateway(env, tmp_path, "clients", "add", "--agreement", HUB, "--client-file", str(hub_file))
    trust(env, tmp_path, ons_file, PAGE["query"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sent = {"graphql": 0, "token": 0, "revoke": 0}
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection, so either worker, every time
    with serving(env, tmp_path, port, workers=2):
        async with httpx.AsyncClient(timeout=30, limits=fresh) as http:
            ons = Caller(read_client_file(ons_file), http)
            token = await ons.token(base)
            sent["token"] += 1

            # One client assertion offered six times at once: accepted once, in whichever worker.
            used = ons.assertion()
            offered = await asyncio.gather(*(
                ons.token_request(base, client_assertion=used, dpop=ons.proof(ons.client.token_endpoint))
                for _ in range(6)
            ))  # fmt: skip
            sent["token"] += 6
            assert sorted(a.status_code for a in offered) == [200] + [401] * 5
            assert {_error(a) for a in offered if a.status_code == 401} == {"invalid_client"}

            # One DPoP proof on four requests at once: answered once.
            shown = ons.proof(ons.client.graphql_endpoint, token)
            answers = await asyncio.gather(*(ons.query(base, token, dpop=shown) for _ in range(4)))
            sent["graphql"] += 4
            assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]

            # Revoked in one worker: refused by both from the next request on.
            before = await asyncio.gather(*(ons.query(base, token) for _ in range(4)))
            assert [a.status_code for a in before] == [200] * 4
            revoked = await ons.form(base, "/oauth/revoke", token=token)
            sent["graphql"], sent["revoke"] = sent["graphql"] + 4, 1
            assert revoked.status_code == 200, revoked.text
            # The other worker hears of it by notification, milliseconds later (give it three seconds
            # on a loaded machine): then six at once, on new connections, are all refused.
            deadline = time.monotonic() + 3
            while True:
                after = await asyncio.gather(*(ons.query(base, token) for _ in range(6)))
                sent["graphql"] += 6
                if all(a.status_code == 401 for a in after) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert [(a.status_code, _error(a)) for a in after] == [(401, "UNAUTHENTICATED")] * 6
            assert all('error="invalid_token"' in a.headers["www-authenticate"] for a in after)

            # Requests per minute, counted once across both workers: the token request and seven pages
            # pass, every later one is refused.
            hub = Caller(read_client_file(hub_file), http)
            hub_token = await hub.token(base)
            sent["token"] += 1
            pages = []
            for _ in range(12):
                headers = {
                    "Authorization": f"DPoP {hub_token}",
                    "DPoP": hub.proof(hub.client.graphql_endpoint, hub_token),
                    "X-Acting-User": "outreach-7",
                }
                pages.append(await http.post(f"{base}/graphql", json=PAGE, headers=headers))
                sent["graphql"] += 1
            assert [p.status_code for p in pages] == [200] * (PER_MINUTE - 1) + [429] * (13 - PER_MINUTE)
            assert {_error(p) for p in pages[PER_MINUTE - 1 :]} == {"RATE_LIMITED"}

            # Metrics: every scrape, whichever worker answers it, counts the requests of both.
            for _ in range(4):
                scraped = await http.get(f"{base}/metrics")
                assert scraped.status_code == 200
                for endpoint, count in sent.items():
                    assert _total(scraped.text, "gateway_requests_total", endpoint=endpoint) == count, (
                        endpoint
                    )
                assert _total(scraped.text, "gateway_rate_limited_total", scope="client") == 13 - PER_MINUTE

    # Both workers answered: each keeps its own audit chain.
    engine = create_engine(env["GATEWAY_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            chains = (
                await conn.execute(
                    text(
                        "SELECT e.chain_id, count(*) FROM audit_events e JOIN audit_chains c "
                        "USING (chain_id) WHERE c.writer = 'gateway' AND e.endpoint = 'graphql' "
                        "GROUP BY e.chain_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert len(chains) == 2, chains


@pytest.mark.parametrize(
    ("url", "redis", "expected"),
    [
        (
            "sqlite+aiosqlite:///{tmp}/g.db",
            None,
            "error: --workers 2 needs PostgreSQL: SQLite is for one process",
        ),
        ("postgresql+asyncpg://postgres@127.0.0.1:1/x", None, "error: --workers 2 needs GATEWAY_REDIS_URL"),
    ],
)
def test_more_than_one_worker_needs_postgresql_and_redis(
    tmp_path: Path, url: str, redis: str | None, expected: str
) -> None:
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATABASE_URL": url.format(tmp=tmp_path)}
    done = subprocess.run(
        [GATEWAY, "serve", "--workers", "2"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(expected), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
