"""Two `gateway serve` processes behind one public URL, as behind a load balancer, sharing a database
(and, in one case, Redis): whatever one process accepts once, the other refuses; a disabled client or a
revoked token stops working in both on the next request; a nonce one issues, the other takes.

On SQLite (both processes ask the file on every request), on PostgreSQL (each keeps the registry in
memory, kept current by LISTEN/NOTIFY) and on PostgreSQL with the replay stores in Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli.client_files import ClientFile, read_client_file
from tests.support.databases import postgres_database, redis_url, sqlite_database
from tests.support.identity import assertion
from tests.support.partners import ASSERTION_TYPE, proof
from tests.support.processes import free_port, gateway, gateway_env, serving, trust

pytestmark = pytest.mark.e2e

PAGE = {"query": "{ people(first: 2) { edges { node { ref } } } }"}


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+redis"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    database = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with database as url:
        # Bursts here; the limits are tested elsewhere.
        made = gateway_env(tmp_path, url, GATEWAY_REQUESTS_PER_SECOND="1000")
        if request.param.endswith("+redis"):
            made["GATEWAY_REDIS_URL"] = await redis_url()
        for command in (["keys", "generate"], ["db", "upgrade"], ["seed", "--people", "100"]):
            gateway(made, tmp_path, *command)
        yield made


class Caller:
    """A partner's system that can send any request to either process, as a balancer would."""

    def __init__(self, client: ClientFile, http: httpx.AsyncClient) -> None:
        self.client, self.http = client, http
        self.nonce: str | None = None

    def assertion(self) -> str:
        assert self.client.key is not None
        return assertion(self.client.client_id, self.client.key, self.client.token_endpoint)

    def proof(self, url: str, token: str | None = None) -> str:
        return proof(self.client.dpop_key, "POST", url, token=token, nonce=self.nonce)

    async def token_request(self, base: str, *, client_assertion: str, dpop: str) -> httpx.Response:
        form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
        response = await self.http.post(
            f"{base}/oauth/token", data={**form, "client_assertion": client_assertion}, headers={"DPoP": dpop}
        )
        self.nonce = response.headers.get("dpop-nonce", self.nonce)
        return response

    async def token(self, base: str) -> str:
        for _ in range(2):
            response = await self.token_request(
                base, client_assertion=self.assertion(), dpop=self.proof(self.client.token_endpoint)
            )
            if response.status_code == 200:
                token = response.json()["access_token"]
                assert isinstance(token, str)
                return token
        raise AssertionError(response.text)

    async def query(self, base: str, token: str, *, dpop: str | None = None) -> httpx.Response:
        headers = {
            "Authorization": f"DPoP {token}",
            "DPoP": dpop or self.proof(self.client.graphql_endpoint, token),
        }
        response = await self.http.post(f"{base}/graphql", json=PAGE, headers=headers)
        self.nonce = response.headers.get("dpop-nonce", self.nonce)
        return response

    async def form(self, base: str, path: str, **fields: str) -> httpx.Response:
        body = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion(), **fields}
        return await self.http.post(f"{base}{path}", data=body)


async def _refused_soon(caller: Caller, base: str, token: str, *, within: float = 3.0) -> httpx.Response:
    """The first answer to `token` at `base` that is not 200, asking again until `within` seconds have
    passed (the answers that still pass are recorded as allowed; the test counts only refusals)."""
    deadline = time.monotonic() + within
    while True:
        answer = await caller.query(base, token)
        if answer.status_code != 200 or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


def _error(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return body.get("error") or body["errors"][0]["extensions"]["code"]
    return None


async def test_what_one_process_accepts_once_the_other_refuses(env: dict[str, str], tmp_path: Path) -> None:
    file = tmp_path / "ons.json"
    gateway(env, tmp_path, "clients", "add", "--agreement", "ons-evaluation", "--client-file", str(file))
    trust(env, tmp_path, file, PAGE["query"])  # ONS runs registered documents only
    one_port, two_port = free_port(), free_port()
    one, two = f"http://127.0.0.1:{one_port}", f"http://127.0.0.1:{two_port}"
    with serving(env, tmp_path, one_port), serving(env, tmp_path, two_port):
        async with httpx.AsyncClient(timeout=30) as http:
            caller = Caller(read_client_file(file), http)

            # A nonce one process issued, the other takes (the gateway's nonces need no shared store).
            first = await caller.token_request(
                one, client_assertion=caller.assertion(), dpop=caller.proof(caller.client.token_endpoint)
            )
            assert (first.status_code, _error(first)) == (400, "use_dpop_nonce")
            token = await caller.token(two)

            # A client assertion: accepted by one, the same one refused by the other.
            used = caller.assertion()
            accepted = await caller.token_request(
                one, client_assertion=used, dpop=caller.proof(caller.client.token_endpoint)
            )
            assert accepted.status_code == 200, accepted.text
            replayed = await caller.token_request(
                two, client_assertion=used, dpop=caller.proof(caller.client.token_endpoint)
            )
            assert (replayed.status_code, _error(replayed)) == (401, "invalid_client")

            # A DPoP proof: good for one request, in whichever process.
            shown = caller.proof(caller.client.graphql_endpoint, token)
            served = await caller.query(one, token, dpop=shown)
            assert served.status_code == 200, served.text
            again = await caller.query(two, token, dpop=shown)
            assert again.status_code == 401
            assert 'error="invalid_dpop_proof"' in again.headers["www-authenticate"]

            # Revoked at one: refused there at once, and at the other as soon as the notification
            # reaches it (milliseconds after the commit on PostgreSQL; a loaded machine may take longer).
            assert (await caller.query(two, token)).status_code == 200
            revoked = await caller.form(two, "/oauth/revoke", token=token)
            assert revoked.status_code == 200, revoked.text
            for base in (two, one):
                refused = await _refused_soon(caller, base, token)
                assert (refused.status_code, _error(refused)) == (401, "UNAUTHENTICATED"), base
            introspected = await caller.form(one, "/oauth/introspect", token=token)
            assert introspected.json() == {"active": False}

            # Disabled by the operator's command (a third process): both refuse its live token at once.
            live = await caller.token(one)
            assert (await caller.query(two, live)).status_code == 200
            gateway(env, tmp_path, "clients", "disable", caller.client.client_id)
            for base in (two, one):
                refused = await _refused_soon(caller, base, live)
                assert (refused.status_code, _error(refused)) == (401, "UNAUTHENTICATED"), base
                assert 'error="invalid_token"' in refused.headers["www-authenticate"]
            no_token = await caller.token_request(
                one, client_assertion=caller.assertion(), dpop=caller.proof(caller.client.token_endpoint)
            )
            assert (no_token.status_code, _error(no_token)) == (401, "invalid_client")

    events = json.loads(
        gateway(env, tmp_path, "audit", "search", "--client", caller.client.client_id, "--json").stdout
    )
    refusals = [(e["endpoint"], e["http_status"]) for e in events if e["outcome"] == "denied"]
    # The nonce asked for, the replayed assertion, the replayed proof, the revoked token twice, the
    # disabled client's token twice and its token request.
    expected = [("token", 400), ("token", 401), ("token", 401)] + [("graphql", 401)] * 5
    assert sorted(refusals) == sorted(expected), refusals
