"""The client address the ledger records: the TCP peer, unless the peer is a trusted proxy; then the
right-most address in X-Forwarded-For that is not a trusted proxy. Always a valid IP address."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from gateway.config import Settings
from gateway.http import client_address, parse_networks
from gateway.keys import SigningKeys
from tests.conftest import ISSUER, build_app
from tests.support.identity import assertion, new_key
from tests.support.partners import ASSERTION_TYPE
from tests.support.requests import event_of
from tests.support.server import serve_in_thread

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8:aa::/48"])


def _request(peer: str | None, *forwarded: str) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded],
        "client": (peer, 4711) if peer is not None else None,
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param(
            "198.51.100.7", ["203.0.113.9"], "198.51.100.7", id="an untrusted peer's header is ignored"
        ),
        pytest.param("10.0.0.1", [], "10.0.0.1", id="a trusted peer with no header is the client"),
        pytest.param("10.0.0.1", ["203.0.113.9"], "203.0.113.9", id="one trusted proxy"),
        pytest.param(
            "10.0.0.1", ["192.0.2.66, 203.0.113.9, 10.0.0.2"], "203.0.113.9", id="right-most untrusted wins"
        ),
        pytest.param(
            "10.0.0.1", ["192.0.2.66", "203.0.113.9"], "203.0.113.9", id="repeated headers in order"
        ),
        pytest.param("10.0.0.1", ["evil.example"], "10.0.0.1", id="not an address: the proxy is the client"),
        pytest.param(
            "10.0.0.1",
            ["203.0.113.9, <script>, 10.0.0.2"],
            "10.0.0.2",
            id="a broken chain stops at the last good hop",
        ),
        pytest.param(
            "10.0.0.1", ["203.0.113.9:443"], "10.0.0.1", id="an address with a port is not an address"
        ),
        pytest.param("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3", id="only proxies: the furthest of them"),
        pytest.param("::ffff:10.0.0.1", ["203.0.113.9"], "203.0.113.9", id="an IPv4-mapped peer"),
        pytest.param(
            "10.0.0.1", ["fe80::1%\u00e9\u00ff AAAA"], "10.0.0.1", id="an IPv6 scope id carries any text"
        ),
        pytest.param("10.0.0.1", ["fe80::1%eth0"], "10.0.0.1", id="an IPv6 scope id at all"),
        pytest.param("2001:db8:aa::1", ["2001:db8:bb::5"], "2001:db8:bb::5", id="IPv6"),
        pytest.param("testclient", ["203.0.113.9"], None, id="a peer that is not an address"),
        pytest.param(None, ["203.0.113.9"], None, id="no peer at all"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str | None) -> None:
    assert client_address(_request(peer, *forwarded), PROXIES) == expected


def test_with_no_trusted_proxies_the_peer_is_always_the_client() -> None:
    assert client_address(_request("127.0.0.1", "203.0.113.9"), ()) == "127.0.0.1"


@pytest.mark.parametrize("value", ["10.0.0.0/33", "not-a-network", "10.0.0.1, ::1/200"])
def test_a_bad_trusted_proxies_setting_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="comma-separated CIDRs"):
        Settings(trusted_proxies=value)


@pytest.fixture
def served(request: pytest.FixtureRequest, settings: Settings, signing: SigningKeys) -> Iterator[str]:
    trusted = settings.model_copy(update={"trusted_proxies": request.param})
    with serve_in_thread(build_app(trusted, signing, None)) as url:
        yield url


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("served", "forwarded", "expected"),
    [
        pytest.param(
            "", "203.0.113.9", "127.0.0.1", id="uvicorn and the gateway ignore a local caller's header"
        ),
        pytest.param("127.0.0.1/32", "203.0.113.9", "203.0.113.9", id="behind a trusted proxy"),
        pytest.param("127.0.0.1/32", "made-up", "127.0.0.1", id="a trusted proxy passing nonsense"),
    ],
    indirect=["served"],
)
async def test_the_ledger_records_the_believable_address(
    served: str, forwarded: str, expected: str, engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        # A client assertion for a client id that is not the caller's, signed with a key of its own.
        guess = assertion("somebody-elses-client-id", new_key(), ISSUER + "/oauth/token")
        refused = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": guess,
            },
            headers={"X-Forwarded-For": forwarded, "X-Real-IP": forwarded, "Forwarded": f"for={forwarded}"},
        )
        graphql = await client.post(
            "/graphql", json={"query": "{ x }"}, headers={"X-Forwarded-For": forwarded}
        )
    assert refused.status_code == 401 and graphql.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    for response in (refused, graphql):
        event = await event_of(engine, response.headers["x-audit-event-id"])
        assert event is not None
        assert event["client_address"] == expected
