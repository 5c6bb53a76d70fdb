"""Rate limits (the `limits` library) and the daily quota of distinct people per client.

- Per client: requests per second and per minute (the agreement's `limits:`, else the gateway's
  settings), a moving window each.
- Per address: requests refused 401 in a minute; past the limit the address is answered 429 before
  its token is even read, so nobody can grow the ledger by sending rubbish.
- Per client and UK day: distinct people disclosed (`people_per_day`). A response that would take the
  client past it is not sent (429 QUOTA_EXCEEDED), and the people it held are not counted.

Counters live in Redis when GATEWAY_REDIS_URL is set (every process shares them), else in this
process's memory (one process; the distinct-people sets are in the database then, so a restart
does not reset a quota).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

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


class RateLimits:
    def __init__(self, settings: Settings, *, prefix: str) -> None:
        if settings.redis_url:
            uri = "async+" + settings.redis_url if "://" in settings.redis_url else settings.redis_url
            storage = storage_from_string(uri, key_prefix=prefix + "rate", implementation="redispy")
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)
        self._settings = settings
        self._unauthenticated = RateLimitItemPerMinute(settings.unauthenticated_per_minute)

    def _client_rules(self, agreement: Agreement | None) -> tuple[RateLimitItem, RateLimitItem]:
        limits = agreement.limits if agreement is not None else None
        return (
            RateLimitItemPerSecond(
                (limits.requests_per_second if limits else None) or self._settings.requests_per_second
            ),
            RateLimitItemPerMinute(
                (limits.requests_per_minute if limits else None) or self._settings.requests_per_minute
            ),
        )

    async def client(self, client_id: str, agreement: Agreement | None) -> Throttled | None:
        """Count one request of the client; a Throttled if it is over either rule."""
        for rule in self._client_rules(agreement):
            if not await self._limiter.hit(rule, "client", client_id):
                return Throttled(
                    "RATE_LIMITED",
                    f"Too many requests: at most {rule.amount} a {rule.GRANULARITY.name}.",
                    await self._retry_after(rule, "client", client_id),
                )
        return None

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
