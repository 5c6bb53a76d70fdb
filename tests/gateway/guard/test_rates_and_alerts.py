"""Rate limits, the daily quota of people, summary events that keep the ledger bounded, and alerts.

Each test enrols its own clients and runs its own app with the limits turned down; the app's lifespan
runs, so the refusal summaries still open are written when it stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.guard.watch import BASELINE_HOURS, FLUSH_REQUESTS, HOUR, VOLUME_FLOOR
from gateway.keys import SigningKeys
from gateway.rights import notifications
from policies import load_agreements
from resolvers.models import people
from tests.gateway.guard.conftest import Enrol, agreements_with, code_of, events, guarded_app, new_address
from tests.support.identity import assertion, new_key
from tests.support.partners import ASSERTION_TYPE

HUB, YOUTH = "family-hub-outreach", "youth-justice"
PAGE = (
    "query($n: Int, $a: String) { people(first: $n, after: $a) "
    "{ edges { node { ref } } pageInfo { endCursor } } }"
)


async def test_past_its_requests_per_second_a_client_is_refused_and_the_refusals_share_one_event(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol
) -> None:
    async with guarded_app(settings, engine, signing, requests_per_second=3) as (_, http):
        hub = await enrolled(HUB, http)
        token = await hub.token()  # a request of the client's too: every endpoint's count
        answers = [await hub.post(PAGE, {"n": 1}, token=token) for _ in range(6)]
        statuses = [answer.status_code for answer in answers]
        # A second may begin meanwhile: three pass in each, and at least two of six are refused.
        assert statuses[:2] == [200, 200] and statuses.count(429) >= 2, statuses
        refused = [answer for answer in answers if answer.status_code == 429]
        assert {code_of(answer) for answer in refused} == {"RATE_LIMITED"}
        assert all(1 <= int(answer.headers["retry-after"]) <= 1 for answer in refused)
        assert refused[0].json()["errors"][0]["message"] == "Too many requests: at most 3 a second."
        summary_id = refused[0].headers["x-audit-event-id"]
        assert {answer.headers["x-audit-event-id"] for answer in refused} == {summary_id}
    # Written when the app stopped: one event standing for every refusal, and none of its own for each.
    [summary] = await events(engine, id=summary_id)
    wanted = ("client_id", "http_status", "error_code", "request_count")
    assert tuple(summary[k] for k in wanted) == (hub.client_id, 429, "RATE_LIMITED", len(refused))
    assert len(await events(engine, client_id=hub.client_id, endpoint="graphql")) == statuses.count(200) + 1


async def test_an_agreement_sets_its_own_requests_per_minute(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, tmp_path: Path
) -> None:
    directory = agreements_with(
        tmp_path, HUB, "people_per_day: 2000}", "people_per_day: 2000, requests_per_minute: 4}"
    )
    async with guarded_app(settings, engine, signing, agreements_dir=directory) as (_, http):
        hub = await enrolled(HUB, http)
        token = await hub.token()
        statuses = [(await hub.post(PAGE, {"n": 1}, token=token)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # the token request was the first of the four
        over = await hub.post(PAGE, {"n": 1}, token=token)
        assert over.json()["errors"][0]["message"] == "Too many requests: at most 4 a minute."
        assert 1 <= int(over.headers["retry-after"]) <= 60


async def test_an_address_past_its_unauthenticated_requests_gets_429_and_one_summary(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol
) -> None:
    async with guarded_app(settings, engine, signing, unauthenticated_per_minute=5) as (_, http):
        hub = await enrolled(HUB, http)
        answers = [
            await http.post(
                "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": "Bearer junk"}
            )
            for _ in range(9)
        ]
        assert [answer.status_code for answer in answers] == [401] * 5 + [429] * 4
        assert {code_of(answer) for answer in answers[5:]} == {"RATE_LIMITED"}
        # A partner with a valid token at the same address is served: only the refusals are limited.
        assert (await hub.post(PAGE, {"n": 1})).status_code == 200
        summary_id = answers[5].headers["x-audit-event-id"]
    individual = {answer.headers["x-audit-event-id"] for answer in answers[:5]}
    assert len(individual) == 5
    for event_id in individual:
        [event] = await events(engine, id=event_id)
        assert (event["error_code"], event["request_count"]) == ("UNAUTHENTICATED", None)
    [summary] = await events(engine, id=summary_id)
    wanted = ("error_code", "http_status", "request_count", "client_id")
    assert tuple(summary[k] for k in wanted) == ("RATE_LIMITED", 429, 4, None)


async def test_throttled_token_requests_are_summarised_so_the_ledger_stays_bounded(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys
) -> None:
    address = new_address()
    async with guarded_app(settings, engine, signing) as (app, _):
        transport = httpx.ASGITransport(app=app, client=(address, 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            answers = []
            for n in range(40):
                claimed = f"ons-evaluation-{n:012x}"
                form = {
                    "grant_type": "client_credentials",
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": assertion(claimed, new_key(), "http://127.0.0.1:8000/oauth/token"),
                }
                answers.append(await http.post("/oauth/token", data=form))
    assert [a.status_code for a in answers] == [401] * 30 + [429] * 10
    summaries = {a.headers["x-audit-event-id"] for a in answers[30:]}
    [summary_id] = summaries
    [summary] = await events(engine, id=summary_id)
    assert (summary["endpoint"], summary["request_count"], summary["client_address"]) == (
        "token",
        10,
        address,
    )


async def test_the_daily_quota_refuses_the_answer_that_would_pass_it_and_counts_only_what_was_sent(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, tmp_path: Path
) -> None:
    directory = agreements_with(tmp_path, HUB, "people_per_day: 2000}", "people_per_day: 5}")
    async with guarded_app(settings, engine, signing, agreements_dir=directory) as (_, http):
        hub = await enrolled(HUB, http)
        first = await hub.data(PAGE, {"n": 3})
        seen = {edge["node"]["ref"] for edge in first["people"]["edges"]}
        cursor = first["people"]["pageInfo"]["endCursor"]
        over = await hub.post(PAGE, {"n": 3, "a": cursor})
        assert (over.status_code, code_of(over)) == (429, "QUOTA_EXCEEDED")
        assert "data" not in over.json() and not any(ref in over.text for ref in seen)
        assert (
            over.json()["errors"][0]["message"] == "This client may receive at most 5 different people a day."
        )
        [refusal] = await events(engine, id=over.headers["x-audit-event-id"])
        assert (refusal["people_count"], refusal["fields_disclosed"]) == (0, "")
        # The same people again cost nothing; the refused ones were not counted, so two more fit.
        again = await hub.data(PAGE, {"n": 3})
        assert {edge["node"]["ref"] for edge in again["people"]["edges"]} == seen
        assert (await hub.post(PAGE, {"n": 2, "a": cursor})).status_code == 200
        assert (await hub.post(PAGE, {"n": 1, "a": cursor})).status_code == 200  # still the same five
        # One alert a day per client, however many refusals.
        assert (await hub.post(PAGE, {"n": 3, "a": None})).status_code == 200
        assert (await hub.post(PAGE, {"n": 100, "a": None})).status_code == 429
    alerts = await events(engine, endpoint="alert", client_id=hub.client_id)
    assert [(a["error_code"], a["operation_name"]) for a in alerts] == [
        ("QUOTA_EXCEEDED", f"about {over.headers['x-audit-event-id']}")
    ]


async def test_a_burst_of_refusals_raises_one_alert(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol
) -> None:
    async with guarded_app(settings, engine, signing) as (_, http):
        youth = await enrolled(YOUTH, http)
        token = await youth.token()
        for _ in range(25):
            refused = await youth.post("{ __typename }", purpose=False, token=token)
            assert refused.status_code == 400
    alerts = await events(engine, endpoint="alert", client_id=youth.client_id)
    assert [(a["error_code"], a["agreement_id"]) for a in alerts] == [("REFUSAL_BURST", YOUTH)]


async def test_unusual_volume_is_judged_against_the_clients_own_last_day(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys
) -> None:
    agreement = load_agreements()[HUB]
    quiet, busy = f"quiet-{time.time_ns()}", f"busy-{time.time_ns()}"
    async with guarded_app(settings, engine, signing) as (app, _):
        guard = app.state.gateway.guard
        state = app.state.gateway.state
        hour = int(time.time()) // HOUR
        for back in range(1, BASELINE_HOURS + 1):  # the busy client's usual hour: 500 requests
            await state.hit(f"volume:{busy}", window_seconds=HOUR, amount=500, at=(hour - back) * HOUR)
        for client in (quiet, busy):
            # This hour so far, as if counted request by request: just at the floor, then past it.
            await state.hit(f"volume:{client}", window_seconds=HOUR, amount=VOLUME_FLOOR - 1)
            for _ in range(2 * FLUSH_REQUESTS):  # added to the shared count in two batches
                await guard.watch.request(client, agreement)
    assert [a["error_code"] for a in await events(engine, endpoint="alert", client_id=quiet)] == [
        "UNUSUAL_VOLUME"
    ]  # raised once in the hour, however many requests follow
    assert await events(engine, endpoint="alert", client_id=busy) == []  # 1,099 is a usual hour for it


async def test_every_kind_of_refusal_of_a_caller_that_proved_nothing_counts_against_its_address(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys
) -> None:
    """Found by an outside tester: wrong methods, malformed requests and unauthenticated OAuth calls each
    wrote a row, with no limit. Now they share the address's limit, and past it one summary a minute."""
    address = new_address()
    async with guarded_app(settings, engine, signing, unauthenticated_per_minute=6) as (app, _):
        transport = httpx.ASGITransport(app=app, client=(address, 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            sends: list[Callable[[], Awaitable[httpx.Response]]] = [
                lambda: http.get("/graphql"),
                lambda: http.delete("/graphql"),
                lambda: http.post("/graphql", json={"query": "{ __typename }"},
                                  headers=[("Authorization", "Bearer x"), ("Authorization", "Bearer y")]),
                lambda: http.get("/oauth/token"),
                lambda: http.post("/oauth/introspect", data={"token": "x"}),
                lambda: http.post("/oauth/token", data={"grant_type": "client_credentials"}),
                lambda: http.post("/oauth/revoke", data={"token": "x"}),
                lambda: http.post("/oauth/token", content=b"\xff\xfe",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}),
            ]  # fmt: skip
            answers = [await send() for send in sends * 3]
    statuses = [a.status_code for a in answers]
    assert all(status != 429 for status in statuses[:6]) and statuses[6:] == [429] * 18, statuses
    ids = {a.headers["x-audit-event-id"] for a in answers}
    # Six events, and a summary for each endpoint refused past the limit: graphql, token, introspect, revoke.
    assert len(ids) == 6 + 4
    rows = [event for event_id in ids for event in await events(engine, id=event_id)]
    assert sum(row["request_count"] or 1 for row in rows) == len(answers)


async def test_the_daily_quota_holds_when_requests_arrive_together(engine: AsyncEngine) -> None:
    """Found by an outside tester on PostgreSQL without Redis: concurrent answers each counted only their
    own new people and all passed. Each set now takes its turn."""
    from gateway.guard import DailyPeople
    from gateway.state import DatabaseState

    agreement = load_agreements()[HUB]
    agreement = dataclasses.replace(agreement, limits=dataclasses.replace(agreement.limits, people_per_day=5))
    people = DailyPeople(DatabaseState(engine))
    client = f"concurrent-{time.time_ns()}"
    answers = await asyncio.gather(*(people.take(client, agreement, {1_000_000 + n}) for n in range(12)))
    assert sum(answer is None for answer in answers) == 5
    assert {answer.code for answer in answers if answer is not None} == {"QUOTA_EXCEEDED"}


async def test_the_art_19_feed_is_read_even_at_the_daily_quota(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, tmp_path: Path
) -> None:
    """A notification names someone the client received before (yesterday, say): telling it of a
    correction is not a new person received, so the feed is never refused QUOTA_EXCEEDED."""
    directory = agreements_with(tmp_path, HUB, "people_per_day: 2000}", "people_per_day: 5}")
    async with guarded_app(settings, engine, signing, agreements_dir=directory) as (_, http):
        hub = await enrolled(HUB, http)
        first = await hub.data(PAGE, {"n": 5})  # today's quota, used up
        received = {hub.person_id(edge["node"]["ref"]) for edge in first["people"]["edges"]}
        async with engine.connect() as conn:
            others = [
                row.id
                for row in await conn.execute(
                    select(people.c.id).where(people.c.id.not_in(received)).limit(3)
                )
            ]
        async with engine.begin() as conn:
            for person_id in others:  # as if received on an earlier day, then corrected
                await conn.execute(
                    notifications.insert().values(
                        id=uuid.uuid4().hex, client_id=hub.client_id, agreement_id=HUB, person_id=person_id,
                        kind="rectification", fields="givenName", request_id=uuid.uuid4().hex,
                        created_at=datetime.now(UTC),
                    )
                )  # fmt: skip
        try:
            feed = await hub.post("query { notifications(first: 10) { edges { node { ref kind } } } }")
            assert feed.status_code == 200, feed.text
            refs = {edge["node"]["ref"] for edge in feed.json()["data"]["notifications"]["edges"]}
            assert refs == {hub.ref(person_id) for person_id in others}
            # ... while a new person is still refused.
            cursor = first["people"]["pageInfo"]["endCursor"]
            over = await hub.post(PAGE, {"n": 1, "a": cursor})
            assert (over.status_code, code_of(over)) == (429, "QUOTA_EXCEEDED")
        finally:
            async with engine.begin() as conn:
                await conn.execute(delete(notifications).where(notifications.c.client_id == hub.client_id))
