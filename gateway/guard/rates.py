"""Rate limits (the `limits` library) and the daily quota of distinct people per client.

- Per client: requests per second and per minute (the agreement's `limits:`, else the gateway's
  settings), a moving window each. A request is counted in both or, refused by either, in neither.
  In Redis one script checks and takes both, atomically, for every request that asked while the
  previous round trip was in flight: under load, many requests share one round trip.
- Per address: requests refused 401 in a minute; past the limit the address is answered 429 before
  its token is even read, so nobody can grow the ledger by sending rubbish.
- Per client and UK day: distinct people disclosed (`people_per_day`). A response that would take the
  client past it is not sent (429 QUOTA_EXCEEDED), and the people it held are not counted.

Counters live in Redis when GATEWAY_REDIS_URL is set (every process shares them), else in this
process's memory (one process; the distinct-people sets are in the database then, so a restart
does not reset a quota).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Final

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.asyncio import Redis

from gateway.config import COUNCIL_TIMEZONE, Settings
from gateway.state import SharedState
from policies import Agreement

_DAY_KEEP: Final = timedelta(hours=26)


@dataclass(frozen=True, slots=True)
class Throttled:
    """Why a request is refused, and when to come back."""

    code: str  # RATE_LIMITED | QUOTA_EXCEEDED
    message: str
    retry_after: int  # seconds


# For each request in turn: every rule's moving window (a list of hit times, newest first, as the
# `limits` library keeps it) checked, then, only if none is full, one hit added to each. KEYS: each
# request's windows, one after another. ARGV: now, then for each request the number of its rules and
# each rule's amount and window in seconds. Answers, per request, 0 or the number of its first full rule.
_ACQUIRE: Final = """
local now = tonumber(ARGV[1])
local answers = {}
local k, a = 1, 2
while a <= #ARGV do
    local n = tonumber(ARGV[a])
    a = a + 1
    local full = 0
    for i = 0, n - 1 do
        local amount, window = tonumber(ARGV[a + 2 * i]), tonumber(ARGV[a + 2 * i + 1])
        local oldest = redis.call('lindex', KEYS[k + i], amount - 1)
        if oldest and tonumber(oldest) >= now - window then
            full = i + 1
            break
        end
    end
    if full == 0 then
        for i = 0, n - 1 do
            local amount, window = tonumber(ARGV[a + 2 * i]), tonumber(ARGV[a + 2 * i + 1])
            redis.call('lpush', KEYS[k + i], now)
            redis.call('ltrim', KEYS[k + i], 0, amount - 1)
            redis.call('expire', KEYS[k + i], window)
        end
    end
    answers[#answers + 1] = full
    k = k + n
    a = a + 2 * n
end
return answers
"""


class _Acquirer:
    """Requests' hits sent to Redis together: whoever asks while a round trip is in flight goes in the
    next one, so that under load many requests share one round trip (as the ledger's group commit
    does), and an idle gateway sends at once. The script takes them one by one, atomically."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_ACQUIRE)
        self._waiting: list[tuple[list[str], list[int], asyncio.Future[int]]] = []
        self._sender: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    async def acquire(self, keys: list[str], rules: list[int]) -> int:
        """`rules`: each key's amount and window. 0, or the number of the first full rule."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._waiting.append((keys, rules, done))
        if self._sender is None or self._sender.done():
            # In a context of its own: it serves every request, not the trace of whichever started it.
            self._sender = loop.create_task(self._send(), context=contextvars.Context())
            self._sender.add_done_callback(self._stopped)
        return await done

    def _stopped(self, sender: asyncio.Task[None]) -> None:
        """A sender cancelled before it ran (the loop shutting down) leaves no request waiting."""
        if sender is self._sender:
            waiting, self._waiting = self._waiting, []
            for _, _, done in waiting:
                done.cancel()

    async def _send(self) -> None:
        while self._waiting:
            # At most _BATCH requests a call: one script call holds Redis for all of its requests.
            batch, self._waiting = self._waiting[:_BATCH], self._waiting[_BATCH:]
            try:
                keys = [key for request_keys, _, _ in batch for key in request_keys]
                args: list[float | int] = [time.time()]
                for request_keys, rules, _ in batch:
                    args += [len(request_keys), *rules]
                answers = await self._script(keys=keys, args=args)
                for (_, _, done), answer in zip(batch, answers, strict=True):
                    if not done.done():  # a request that went away was counted all the same
                        done.set_result(int(answer))
            except BaseException as error:
                # Redis is gone, or this task was cancelled: each request waiting fails as it would
                # alone, never waits on (a script that failed part-way counted the requests before the
                # failure; that refuses too many, never too few).
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(_own(error))
                if not isinstance(error, Exception):
                    for _, _, done in self._waiting:
                        if not done.done():
                            done.set_exception(_own(error))
                    self._waiting = []
                    raise


_BATCH: Final = 500


def _own(error: BaseException) -> BaseException:
    """A copy of the error for each request that raises it (raising adds to its traceback)."""
    try:
        return copy.copy(error)
    except Exception:
        return error


class RateLimits:
    def __init__(self, settings: Settings, *, prefix: str) -> None:
        self._acquirer: _Acquirer | None = None
        self._redis: Redis | None = None
        if settings.redis_url:
            uri = "async+" + settings.redis_url if "://" in settings.redis_url else settings.redis_url
            storage = storage_from_string(uri, key_prefix=prefix + "rate", implementation="redispy")
            self._redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self._acquirer = _Acquirer(self._redis)
            self._key_prefix = prefix + "rate"
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)
        self._memory = asyncio.Lock()  # the memory store's tests and hits, one request at a time
        self._settings = settings
        self._unauthenticated = RateLimitItemPerMinute(settings.unauthenticated_per_minute)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _client_rules(self, agreement: Agreement | None) -> tuple[RateLimitItem, RateLimitItem]:
        limits = agreement.limits if agreement is not None else None
        return _rules(
            (limits.requests_per_second if limits else None) or self._settings.requests_per_second,
            (limits.requests_per_minute if limits else None) or self._settings.requests_per_minute,
        )

    async def client(self, client_id: str, agreement: Agreement | None) -> Throttled | None:
        """Count one request of the client in both rules; a Throttled, and nothing counted, if either
        is full."""
        rules = self._client_rules(agreement)
        full = await self._full_rule(rules, client_id)
        if full is None:
            return None
        return Throttled(
            "RATE_LIMITED",
            f"Too many requests: at most {full.amount} a {full.GRANULARITY.name}.",
            await self._retry_after(full, "client", client_id),
        )

    async def _full_rule(self, rules: tuple[RateLimitItem, ...], client_id: str) -> RateLimitItem | None:
        if self._acquirer is None:
            # In this process's memory, one request at a time: the library's storage waits on locks
            # (its expiry task holds them), so without this others could pass the tests in between.
            async with self._memory:
                for rule in rules:
                    if not await self._limiter.test(rule, "client", client_id):
                        return rule
                for rule in rules:
                    if not await self._limiter.hit(rule, "client", client_id):
                        return rule  # cannot happen while the lock is held; refused if it ever did
            return None
        # The keys the `limits` library uses for the same rules, so that its window statistics
        # (Retry-After) read what the script counted.
        answer = await self._acquirer.acquire(
            [f"{self._key_prefix}:{rule.key_for('client', client_id)}" for rule in rules],
            [n for rule in rules for n in (rule.amount, rule.get_expiry())],
        )
        return rules[answer - 1] if answer else None

    async def address_blocked(self, address: str | None) -> Throttled | None:
        """Whether the address has had too many refused requests from callers that did not prove who
        they are (no valid token, no client authentication, a wrong method) this minute. Counts nothing."""
        if address is None or await self._limiter.test(self._unauthenticated, "address", address):
            return None
        return Throttled(
            "RATE_LIMITED",
            "Too many requests without a valid access token from this address.",
            await self._retry_after(self._unauthenticated, "address", address),
        )

    async def unauthenticated(self, address: str | None) -> None:
        if address is not None:
            await self._limiter.hit(self._unauthenticated, "address", address)

    async def _retry_after(self, rule: RateLimitItem, *identifiers: str) -> int:
        stats = await self._limiter.get_window_stats(rule, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))


@lru_cache(maxsize=64)
def _rules(per_second: int, per_minute: int) -> tuple[RateLimitItem, RateLimitItem]:
    return RateLimitItemPerSecond(per_second), RateLimitItemPerMinute(per_minute)


class DailyPeople:
    """Distinct people disclosed to each client in a UK day, against its agreement's people_per_day."""

    def __init__(self, state: SharedState) -> None:
        self._state = state
        # People this process has seen counted for a client today: they are in the shared set already,
        # so an answer holding only them needs no round trip (a new person always asks the store).
        self._counted: dict[str, set[str]] = {}

    async def take(
        self, client_id: str, agreement: Agreement, people: Collection[int], *, now: datetime | None = None
    ) -> Throttled | None:
        """Count these people for the client today; a Throttled (and nothing counted) if that would take
        it past its quota."""
        quota = agreement.limits.people_per_day
        if quota is None or not people:
            return None
        moment = (now or datetime.now(COUNCIL_TIMEZONE)).astimezone(COUNCIL_TIMEZONE)
        key = f"people:{client_id}:{moment.date().isoformat()}"
        members = {str(person) for person in people}
        counted = self._counted.setdefault(key, set())
        if members <= counted:
            return None
        expires = int((moment.replace(hour=0, minute=0, second=0, microsecond=0) + _DAY_KEEP).timestamp())
        added, total = await self._state.add_members(key, members, expires_at=expires)
        if total <= quota:
            if len(self._counted) > 1_000 or len(counted) > 100_000:
                self._counted.clear()
            self._counted.setdefault(key, set()).update(members)
            return None
        await self._state.remove_members(key, added)  # not sent, so not counted
        midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return Throttled(
            "QUOTA_EXCEEDED",
            f"This client may receive at most {quota} different people a day.",
            max(1, int((midnight - moment).total_seconds())),
        )
