"""`/metrics`: Prometheus text that a scraper parses, counting what the gateway did, with no personal
value and no label that could take an unbounded number of values; and only for the scraper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.applications import Starlette

from gateway.config import Settings
from gateway.keys import SigningKeys
from gateway.metrics import ENDPOINTS, OUTCOMES, RATE_SCOPES
from tests.conftest import build_app
from tests.support.partners import Partner

PAGE = (
    "{ people(first: 20) { edges { node { ref givenName familyName phone email address { postcode } } } } }"
)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value for (sample, have), value in samples.items()
        if sample == name and set(labels.items()) <= set(have)
    )  # fmt: skip


async def _scrape(client: httpx.AsyncClient) -> tuple[str, dict[Any, float]]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text, _samples(response.text)


async def test_metrics_count_requests_and_people_and_carry_no_personal_value(
    local_partner: Callable[[str], Partner], asgi: httpx.AsyncClient, agreements: dict[str, Any]
) -> None:
    _, before = await _scrape(asgi)
    hub = local_partner("family-hub-outreach")
    token = await hub.token()
    people = (await hub.data(PAGE, token=token))["people"]["edges"]
    refused = await hub.post("{ people(first: 20) { edges { node { uprn } } } }", token=token)
    assert refused.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    text, after = await _scrape(asgi)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    hub_graphql = {"endpoint": "graphql", "agreement": "family-hub-outreach"}
    assert grew("gateway_requests_total", **hub_graphql, outcome="allowed", status="200") == 1
    assert grew("gateway_requests_total", **hub_graphql, outcome="denied") == 1
    assert (
        grew("gateway_requests_total", endpoint="token", agreement="family-hub-outreach", outcome="allowed")
        == 1
    )
    assert grew("gateway_people_disclosed_total", agreement="family-hub-outreach") == len(people) == 20
    assert grew("gateway_refusals_total", endpoint="graphql", code="GRAPHQL_VALIDATION_FAILED") == 1
    assert grew("gateway_request_duration_seconds_count", endpoint="graphql") == 2
    assert grew("gateway_audit_batch_size_count") >= 1
    assert grew("gateway_audit_commit_seconds_count") >= 1

    # No personal value anywhere in the text: not a name, a date of birth, a postcode or a ref.
    for edge in people:
        node = edge["node"]
        for value in (node["ref"], node["givenName"], node["familyName"], node["phone"], node["email"]):
            assert not value or value not in text
        if node["address"]:
            assert node["address"]["postcode"] not in text
    # Every label takes its value from a closed set: nothing a caller chose, no client id, no ref.
    allowed = {
        "endpoint": ENDPOINTS | {"other"},
        "agreement": set(agreements) | {"none", "other"},
        "outcome": OUTCOMES | {"other"},
        "scope": RATE_SCOPES | {"other"},
    }
    for (name, labels), _ in after.items():
        for key, value in labels:
            if key in allowed:
                assert value in allowed[key], (name, key, value)
            elif key == "status":
                assert value.isdigit() and len(value) == 3
            elif key in ("code", "kind"):
                assert value.replace("_", "").isalpha(), (name, key, value)
            else:
                assert key == "le", (name, key)  # histogram buckets only


@pytest.mark.parametrize(
    ("peer", "token", "authorization", "status"),
    [
        ("127.0.0.1", None, None, 200),
        ("::1", None, None, 200),
        ("10.1.2.3", None, None, 403),  # no token set: loopback only
        ("127.0.0.1", None, "relayed", 403),  # a proxy on this host relaying someone elsewhere
        ("10.1.2.3", "s3cret-scrape-token", "Bearer s3cret-scrape-token", 200),
        ("127.0.0.1", "s3cret-scrape-token", None, 403),  # a token set: even loopback presents it
        ("10.1.2.3", "s3cret-scrape-token", "Bearer wrong", 403),
    ],
)
async def test_only_the_scraper_may_read_metrics(
    settings: Settings, signing: SigningKeys, app: Starlette, peer: str, token: str | None,
    authorization: str | None, status: int,
) -> None:  # fmt: skip
    served = (
        app
        if token is None
        else build_app(
            settings.model_copy(update={"metrics_token": SecretStr(token)}), signing, app.state.gateway.engine
        )
    )
    transport = httpx.ASGITransport(app=served, client=(peer, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        headers = {"Authorization": authorization} if authorization else {}
        if authorization == "relayed":
            headers = {"X-Forwarded-For": "203.0.113.5"}
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert "gateway_" not in response.text
