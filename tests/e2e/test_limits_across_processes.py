"""Rate limits and quotas hold across two `gateway serve` processes sharing PostgreSQL and Redis.

A partner's requests alternate between the processes, as behind a load balancer: the requests per minute
its agreement allows are counted once across both, and so are the distinct people it may receive a day.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.cli.client_files import read_client_file
from tests.e2e.test_identity_across_processes import Caller, _error
from tests.support.databases import postgres_database, redis_url
from tests.support.processes import agreements_with_hub_limits, free_port, gateway, gateway_env, serving

pytestmark = pytest.mark.e2e

HUB = "family-hub-outreach"
PER_MINUTE, PER_DAY = 6, 5


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    agreements = agreements_with_hub_limits(
        tmp_path / "agreements",
        f"max_page_size: 100, people_per_day: {PER_DAY}, requests_per_minute: {PER_MINUTE}",
    )
    async with postgres_database() as url:
        made = gateway_env(
            tmp_path, url, GATEWAY_AGREEMENTS_DIR=str(agreements), GATEWAY_REDIS_URL=await redis_url(),
            GATEWAY_DPOP_NONCE="false",
        )  # fmt: skip
        for command in (["keys", "generate"], ["db", "upgrade"], ["seed", "--people", "400"]):
            gateway(made, tmp_path, *command)
        yield made


async def _page(caller: Caller, base: str, token: str, size: int, after: str | None) -> httpx.Response:
    body = {
        "query": "query($n: Int, $a: String) { people(first: $n, after: $a) "
        "{ edges { node { ref } } pageInfo { endCursor } } }",
        "variables": {"n": size, "a": after},
    }
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": caller.proof(caller.client.graphql_endpoint, token),
        "X-Acting-User": "outreach-7",
    }
    return await caller.http.post(f"{base}/graphql", json=body, headers=headers)


async def test_requests_per_minute_and_people_per_day_count_across_both_processes(
    env: dict[str, str], tmp_path: Path
) -> None:
    file = tmp_path / "hub.json"
    gateway(env, tmp_path, "clients", "add", "--agreement", HUB, "--client-file", str(file))
    ports = free_port(), free_port()
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    with serving(env, tmp_path, ports[0]), serving(env, tmp_path, ports[1]):
        async with httpx.AsyncClient(timeout=30) as http:
            caller = Caller(read_client_file(file), http)
            token = await caller.token(bases[0])

            # People: 2 + 2 new people pass (4 of 5), the next 2 new ones would make 6: refused, not counted.
            first = await _page(caller, bases[0], token, 2, None)
            assert first.status_code == 200, first.text
            cursor = first.json()["data"]["people"]["pageInfo"]["endCursor"]
            second = await _page(caller, bases[1], token, 2, cursor)
            assert second.status_code == 200, second.text
            cursor = second.json()["data"]["people"]["pageInfo"]["endCursor"]
            over = await _page(caller, bases[0], token, 2, cursor)
            assert (over.status_code, _error(over)) == (429, "QUOTA_EXCEEDED")
            assert "data" not in over.json() and int(over.headers["retry-after"]) >= 1
            one_more = await _page(caller, bases[1], token, 1, cursor)  # the fifth person fits
            assert one_more.status_code == 200, one_more.text

            # Requests: five so far in this minute (the token request among them), across both; one more
            # passes, then every one is refused.
            statuses = []
            for n in range(4):
                again = await _page(caller, bases[n % 2], token, 1, None)  # a person already counted
                statuses.append((again.status_code, _error(again) if again.status_code != 200 else None))
            assert statuses == [(200, None)] + [(429, "RATE_LIMITED")] * 3
