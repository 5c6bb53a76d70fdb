"""The state every process shares (gateway/state.py): the replay guard and the counters, in the
database (SQLite and PostgreSQL) and in a real Redis; and what the gateway answers when Redis is gone."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.config import Settings
from gateway.keys import SigningKeys
from gateway.state import DatabaseState, RedisState, SharedState, shared_sets, shared_state
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.databases import redis_url
from tests.support.partners import Partner
from tests.support.requests import event_of


@pytest.fixture(params=["database", "redis"])
async def states(
    request: pytest.FixtureRequest, engine: AsyncEngine
) -> AsyncIterator[tuple[SharedState, SharedState]]:
    """Two handles on one shared store, as two processes hold them."""
    if request.param == "database":
        yield DatabaseState(engine), DatabaseState(engine)
        return
    url = await redis_url()
    prefix = f"test-{secrets.token_hex(4)}:"
    one, two = RedisState(url, prefix=prefix), RedisState(url, prefix=prefix)
    yield one, two
    await one.close()
    await two.close()


async def test_a_key_is_used_once_whichever_process_offers_it(
    states: tuple[SharedState, SharedState],
) -> None:
    one, two = states
    key = f"assertion:{secrets.token_hex(8)}"
    later = int(time.time()) + 300
    assert await one.first_use(key, expires_at=later) is True
    assert await two.first_use(key, expires_at=later) is False
    assert await one.first_use(key, expires_at=later) is False
    assert await two.first_use(f"proof:{key}", expires_at=later) is True, "another key is another key"


async def test_counters_add_up_across_processes(states: tuple[SharedState, SharedState]) -> None:
    one, two = states
    key = f"failures:{secrets.token_hex(8)}"
    assert await one.peek(key, window_seconds=60) == 0
    assert [await one.hit(key, window_seconds=60), await two.hit(key, window_seconds=60)] == [1, 2]
    assert await two.hit(key, window_seconds=60) == 3
    assert await one.peek(key, window_seconds=60) == 3 and await one.peek(key, window_seconds=60) == 3


async def test_a_set_counts_each_member_once_whoever_adds_it_at_the_same_time(
    states: tuple[SharedState, SharedState],
) -> None:
    one, two = states
    key = f"people:{secrets.token_hex(8)}"
    later = int(time.time()) + 300
    first, second = [str(n) for n in range(0, 60)], [str(n) for n in range(40, 100)]
    (added_one, size_one), (added_two, size_two) = await asyncio.gather(
        one.add_members(key, first, expires_at=later), two.add_members(key, second, expires_at=later)
    )
    assert added_one | added_two == {str(n) for n in range(100)} and not added_one & added_two
    # Whichever went second saw the other's members too.
    assert sorted([size_one, size_two]) == [60, 100]
    assert await one.add_members(key, ["5", "99"], expires_at=later) == (set(), 100)
    await two.remove_members(key, ["5", "99", "not-a-member"])
    assert await one.add_members(key, ["100"], expires_at=later) == ({"100"}, 99)


async def test_a_set_kept_before_its_size_was_counted_is_counted_once(engine: AsyncEngine) -> None:
    key = f"people:{secrets.token_hex(8)}"
    later = int(time.time()) + 300
    async with engine.begin() as conn:
        await conn.execute(
            insert(shared_sets), [{"key": key, "member": str(n), "expires_at": later} for n in range(7)]
        )
    state = DatabaseState(engine)
    assert await state.add_members(key, ["6", "7"], expires_at=later) == ({"7"}, 8)
    assert await state.add_members(key, ["8"], expires_at=later) == ({"8"}, 9)


async def test_a_reservation_is_given_back_in_the_window_it_was_taken_in(
    states: tuple[SharedState, SharedState],
) -> None:
    one, two = states
    key = f"failures:{secrets.token_hex(8)}"
    last_window = time.time() - 60
    assert await one.hit(key, window_seconds=60, at=last_window) == 1
    assert await two.hit(key, window_seconds=60) == 1, "this window counts on its own"
    assert await two.hit(key, window_seconds=60, amount=-1, at=last_window) == 0
    assert await one.peek(key, window_seconds=60) == 1, "the current window is untouched"


async def test_a_redis_key_expires_with_what_it_guards() -> None:
    url = await redis_url()
    from redis.asyncio import Redis

    prefix = f"test-{secrets.token_hex(4)}:"
    state = RedisState(url, prefix=prefix)
    raw = Redis.from_url(url)
    try:
        expires_at = int(time.time()) + 120
        assert await state.first_use("jti:x", expires_at=expires_at)
        assert await raw.expiretime(f"{prefix}once:jti:x") == expires_at
        await state.hit("client:y", window_seconds=60)
        [counter] = [key async for key in raw.scan_iter(f"{prefix}count:client:y:*")]
        # A window's count is kept a day and more after the window (the hourly baselines read it back).
        start = int(counter.decode().rpartition(":")[2])
        assert start <= time.time() < start + 60
        assert await raw.expiretime(counter) == start + 60 + 90_000
        assert 90_000 < await raw.ttl(counter) <= 60 + 90_000
    finally:
        await state.close()
        await raw.aclose()


async def test_without_redis_the_gateway_answers_503_and_records_it(
    settings: Settings,
    signing: SigningKeys,
    engine: AsyncEngine,
    local_partner: Callable[[str], Partner],
) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(
        unreachable, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            police = local_partner("police-prevention")
            token = await police.token()  # from the gateway whose shared state is reachable
            partner = Partner(
                http,
                police.agreement,
                police.client_id,
                police.key,
                police.dpop_key,
                police.refs,
                police.issuer,
            )
            refused = await partner.token_response()
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "temporarily_unavailable"
            assert refused.headers["retry-after"] == "5"
            assert "access_token" not in refused.text
            event: dict[str, Any] | None = await event_of(engine, refused.headers["x-audit-event-id"])
            assert event is not None and (event["http_status"], event["error_code"]) == (
                503,
                "temporarily_unavailable",
            )

            query = await partner.post("{ people(first: 1) { edges { node { ref } } } }", token=token)
            assert query.status_code == 503, query.text
            assert query.json()["errors"][0]["extensions"]["code"] == "DATABASE_UNAVAILABLE"
            assert "data" not in query.json()
            event = await event_of(engine, query.headers["x-audit-event-id"])
            assert event is not None and (event["http_status"], event["people_count"]) == (503, 0)
    finally:
        ledger = app.state.gateway.ledger
        if ledger is not None:
            await ledger.close()


async def test_deployments_sharing_one_redis_share_no_replay_store_or_counter(engine: AsyncEngine) -> None:
    url = await redis_url()
    issuer = f"https://gateway-{secrets.token_hex(4)}.example"
    here, again = shared_state(engine, url, issuer=issuer), shared_state(engine, url, issuer=issuer)
    elsewhere = shared_state(engine, url, issuer=issuer + ".other")
    try:
        key = f"assertion:{secrets.token_hex(8)}"
        later = int(time.time()) + 60
        assert await here.first_use(key, expires_at=later) is True
        assert await again.first_use(key, expires_at=later) is False, "one deployment, one store"
        assert await elsewhere.first_use(key, expires_at=later) is True, "another deployment's own"
        assert await here.hit(key, window_seconds=60) == 1
        assert await elsewhere.peek(key, window_seconds=60) == 0
    finally:
        for state in (here, again, elsewhere):
            await state.close()
