"""A client's two moving windows (per second, per minute), in this process's memory and in Redis.

A request is counted in both windows or, refused by either, in neither; in Redis both are checked and
taken in one script, so clients racing each other never get past either window.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings
from gateway.db import is_unavailable
from gateway.guard import RateLimits
from tests.support.databases import redis_url
from tests.support.processes import free_port


@pytest.fixture(params=["memory", "redis"])
async def limits(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[RateLimits]:
    url = await redis_url() if request.param == "redis" else None
    rates = RateLimits(
        settings.model_copy(update={"redis_url": url, "requests_per_second": 3, "requests_per_minute": 5}),
        prefix=f"gateway:test-{secrets.token_hex(6)}:",
    )
    yield rates
    await rates.close()


async def test_a_client_is_refused_past_its_second_and_then_past_its_minute(limits: RateLimits) -> None:
    client = f"client-{secrets.token_hex(4)}"
    first_second = [await limits.client(client, None) for _ in range(4)]
    assert first_second[:3] == [None, None, None]
    refused = first_second[3]
    assert refused is not None and refused.code == "RATE_LIMITED"
    assert refused.message == "Too many requests: at most 3 a second."
    assert 1 <= refused.retry_after <= 1

    await asyncio.sleep(1.05)
    # The refused request was counted in neither window: two more fit the minute's five.
    assert [await limits.client(client, None) for _ in range(2)] == [None, None]
    past_minute = await limits.client(client, None)
    assert past_minute is not None and past_minute.message == "Too many requests: at most 5 a minute."
    # Retry-After is read from the same window the hits went to: the first hit leaves it 59 s from now.
    assert 55 <= past_minute.retry_after <= 59
    # Another client has windows of its own.
    assert await limits.client(f"client-{secrets.token_hex(4)}", None) is None


async def test_requests_arriving_together_never_pass_a_window(limits: RateLimits) -> None:
    client = f"client-{secrets.token_hex(4)}"
    answers = await asyncio.gather(*(limits.client(client, None) for _ in range(20)))
    assert sum(answer is None for answer in answers) == 3
    assert {answer.code for answer in answers if answer is not None} == {"RATE_LIMITED"}


async def test_many_clients_asking_at_once_each_get_their_own_windows(limits: RateLimits) -> None:
    clients = [f"client-{secrets.token_hex(4)}" for _ in range(4)]
    asked = [client for n, client in enumerate(clients, start=4) for _ in range(n)]
    random.Random(20261130).shuffle(asked)  # mixed, as they arrive: they share round trips
    answers = await asyncio.gather(*(limits.client(client, None) for client in asked))
    admitted = {client: 0 for client in clients}
    for client, answer in zip(asked, answers, strict=True):
        admitted[client] += answer is None
    assert admitted == dict.fromkeys(clients, 3)
    refused = next(answer for answer in answers if answer is not None)
    assert refused.message == "Too many requests: at most 3 a second."


async def test_without_redis_every_request_waiting_fails_as_unavailable(settings: Settings) -> None:
    rates = RateLimits(
        settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}),
        prefix="gateway:gone:",
    )
    try:
        answers = await asyncio.gather(
            *(rates.client("client", None) for _ in range(5)), return_exceptions=True
        )
    finally:
        await rates.close()
    assert all(isinstance(answer, BaseException) and is_unavailable(answer) for answer in answers), answers
    assert len({id(answer) for answer in answers}) == 5


@pytest.mark.parametrize("when", ["before it runs", "while Redis answers"])
async def test_requests_never_wait_on_a_round_trip_that_was_cancelled(settings: Settings, when: str) -> None:
    rates = RateLimits(
        settings.model_copy(update={"redis_url": await redis_url()}),
        prefix=f"gateway:test-{secrets.token_hex(6)}:",
    )
    try:
        waiting = [asyncio.ensure_future(rates.client(f"client-{n}", None)) for n in range(10)]
        await asyncio.sleep(0)  # every request has asked; the round trip is made, not yet run
        assert rates._acquirer is not None and rates._acquirer._sender is not None
        sender = rates._acquirer._sender
        if when == "while Redis answers":
            await asyncio.sleep(0)  # it runs up to its wait on Redis
        sender.cancel()
        answers = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=5)
        assert all(isinstance(answer, BaseException) for answer in answers), answers
        assert await rates.client("client-after", None) is None  # the next request makes a new round trip
    finally:
        await rates.close()
