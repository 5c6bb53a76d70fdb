"""State that every process of the gateway shares: a replay guard and counters.

- `first_use(key, expires_at)`: True the first time a key is offered, False ever after (until it
  expires): a client assertion's or a DPoP proof's `jti` is accepted once, in whichever process.
- `add_members(key, members, expires_at)`: add to a set and return (those that were new, its size):
  the distinct people disclosed to a client in a day; `remove_members` takes them out again.
- `hit(key, window)`: add `amount` (one, or minus one to give a reservation back) to the count of
  the fixed window holding `at` (now, by default) and return the new count, atomically: failed client
  authentication per client id and per address; `peek` reads the count without adding to it.

In Redis when GATEWAY_REDIS_URL is set (several workers or replicas: one round trip, SET NX / INCR),
otherwise in the gateway's own database (tables `replay_guard` and `shared_counters`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterator
from typing import Any, Final, Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    exc,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

state_metadata = MetaData()

replay_guard = Table(
    "replay_guard",
    state_metadata,
    Column("key", String(200), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

shared_counters = Table(
    "shared_counters",
    state_metadata,
    Column("key", String(200), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

shared_sets = Table(
    "shared_sets",
    state_metadata,
    Column("key", String(200), primary_key=True),
    Column("member", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

_PURGE_EVERY: Final = 60.0  # seconds between deletions of expired replay keys and old windows
_COUNTERS_KEPT: Final = 3 * 86_400  # a counter is deleted this long after its window starts


_ADD_MEMBERS: Final = text(
    "INSERT INTO shared_sets (key, member, expires_at) "
    "SELECT :key, member, :expires_at FROM unnest(CAST(:members AS varchar[])) AS member "
    "ON CONFLICT DO NOTHING RETURNING member"
)


def _size_key(key: str) -> str:
    """The counter that holds the size of the set `key`."""
    return f"size-of:{key}"[:200]


class SharedState(Protocol):
    async def first_use(self, key: str, *, expires_at: int) -> bool: ...

    async def hit(
        self, key: str, *, window_seconds: int, amount: int = 1, at: float | None = None
    ) -> int: ...

    async def peek(self, key: str, *, window_seconds: int, at: float | None = None) -> int: ...

    async def add_members(
        self, key: str, members: Collection[str], *, expires_at: int
    ) -> tuple[set[str], int]: ...

    async def remove_members(self, key: str, members: Collection[str]) -> None: ...

    async def ping(self) -> None:
        """Raises unless the store answers now (the readiness probe)."""

    async def close(self) -> None: ...


class DatabaseState:
    """The gateway's database as the shared store: a row per key, expired rows purged now and then."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._purged_at = 0.0

    async def first_use(self, key: str, *, expires_at: int) -> bool:
        await self._purge()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(replay_guard).values(key=key[:200], expires_at=expires_at))
        except exc.IntegrityError:
            return False
        return True

    async def hit(self, key: str, *, window_seconds: int, amount: int = 1, at: float | None = None) -> int:
        await self._purge()
        start = _window(at, window_seconds)
        upsert = postgresql_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        statement: Any = upsert(shared_counters).values(key=key[:200], window_start=start, count=amount)
        statement = statement.on_conflict_do_update(
            index_elements=["key", "window_start"], set_={"count": shared_counters.c.count + amount}
        ).returning(shared_counters.c.count)
        async with self._engine.begin() as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def peek(self, key: str, *, window_seconds: int, at: float | None = None) -> int:
        start = _window(at, window_seconds)
        async with self._engine.connect() as conn:
            found = await conn.execute(
                select(shared_counters.c.count).where(
                    shared_counters.c.key == key[:200], shared_counters.c.window_start == start
                )
            )
            return int(found.scalar() or 0)

    async def add_members(
        self, key: str, members: Collection[str], *, expires_at: int
    ) -> tuple[set[str], int]:
        """The set's size is kept in a counter row beside it (`_size_key`), so that adding to a set of
        thousands is not a count of thousands: the counter's row lock orders concurrent adders, and
        each counts only the members it inserted (ON CONFLICT DO NOTHING gives a member to one)."""
        await self._purge()
        key = key[:200]
        upsert = postgresql_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        added: set[str] = set()
        async with self._engine.begin() as conn:
            if self._engine.dialect.name == "postgresql":
                # One statement for any number of members, prepared once: a VALUES list of a hundred
                # rows was a new statement for SQLAlchemy to compile on every page.
                inserted = await conn.execute(
                    _ADD_MEMBERS, {"key": key, "members": sorted(members), "expires_at": expires_at}
                )
                added.update(inserted.scalars())
            else:
                for chunk in _chunks(sorted(members), 500):
                    statement: Any = upsert(shared_sets).values(
                        [{"key": key, "member": member, "expires_at": expires_at} for member in chunk]
                    )
                    inserted = await conn.execute(
                        statement.on_conflict_do_nothing().returning(shared_sets.c.member)
                    )
                    added.update(inserted.scalars())
            total = await self._resize(conn, key, len(added), expires_at=expires_at)
        return added, total

    async def remove_members(self, key: str, members: Collection[str]) -> None:
        key = key[:200]
        async with self._engine.begin() as conn:
            removed = 0
            for chunk in _chunks(sorted(members), 500):
                gone = await conn.execute(
                    delete(shared_sets)
                    .where(shared_sets.c.key == key, shared_sets.c.member.in_(chunk))
                    .returning(shared_sets.c.member)
                )
                removed += len(gone.all())
            if removed:
                await conn.execute(
                    update(shared_counters)
                    .where(shared_counters.c.key == _size_key(key))
                    .values(count=shared_counters.c.count - removed)
                )

    async def _resize(self, conn: AsyncConnection, key: str, added: int, *, expires_at: int) -> int:
        """The set's size after `added` new members: its counter moved by them, or, the first time
        (a set from before the counter was kept), counted once and the counter made."""
        size_key = _size_key(key)
        moved = await conn.execute(
            update(shared_counters)
            .where(shared_counters.c.key == size_key)
            .values(count=shared_counters.c.count + added)
            .returning(shared_counters.c.count)
        )
        total = moved.scalar_one_or_none()
        if total is not None:
            return int(total)
        counted = (
            select(func.count()).select_from(shared_sets).where(shared_sets.c.key == key).scalar_subquery()
        )
        upsert = postgresql_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        # Purged with the set: counters go 3 days after their window starts (`_purge`).
        made: Any = upsert(shared_counters).values(
            key=size_key, window_start=expires_at - _COUNTERS_KEPT, count=counted
        )
        made = made.on_conflict_do_update(
            index_elements=["key", "window_start"], set_={"count": shared_counters.c.count + added}
        ).returning(shared_counters.c.count)
        return int((await conn.execute(made)).scalar_one())

    async def ping(self) -> None:
        return None  # the database itself: the probe checks it on its own

    async def close(self) -> None:
        return None

    async def _purge(self) -> None:
        now = time.time()
        if now - self._purged_at < _PURGE_EVERY:
            return
        self._purged_at = now
        async with self._engine.begin() as conn:
            await conn.execute(delete(replay_guard).where(replay_guard.c.expires_at < int(now)))
            await conn.execute(
                delete(shared_counters).where(shared_counters.c.window_start < int(now) - _COUNTERS_KEPT)
            )
            await conn.execute(delete(shared_sets).where(shared_sets.c.expires_at < int(now)))


class RedisState:
    """Redis as the shared store: SET NX with the key's own expiry; INCR with the window's."""

    def __init__(self, url: str, *, prefix: str = "gateway:") -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix

    async def first_use(self, key: str, *, expires_at: int) -> bool:
        expires_at = max(expires_at, int(time.time()) + 1)
        return bool(await self._redis.set(f"{self._prefix}once:{key}", b"1", nx=True, exat=expires_at))

    async def hit(self, key: str, *, window_seconds: int, amount: int = 1, at: float | None = None) -> int:
        start = _window(at, window_seconds)
        name = f"{self._prefix}count:{key}:{start}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(name, amount)
            pipe.expireat(name, start + window_seconds + 90_000)  # a day and more: baselines read back
            count, _ = await pipe.execute()
        return int(count)

    async def peek(self, key: str, *, window_seconds: int, at: float | None = None) -> int:
        start = _window(at, window_seconds)
        return int(await self._redis.get(f"{self._prefix}count:{key}:{start}") or 0)

    async def add_members(
        self, key: str, members: Collection[str], *, expires_at: int
    ) -> tuple[set[str], int]:
        name = f"{self._prefix}set:{key}"
        ordered = sorted(members)
        if not ordered:
            return set(), int(await self._redis.scard(name))
        async with self._redis.pipeline(transaction=True) as pipe:  # MULTI: nothing runs in between
            pipe.smismember(name, ordered)
            pipe.sadd(name, *ordered)
            pipe.expireat(name, max(expires_at, int(time.time()) + 1))
            pipe.scard(name)
            present, _, _, total = await pipe.execute()
        return {member for member, there in zip(ordered, present, strict=True) if not there}, int(total)

    async def remove_members(self, key: str, members: Collection[str]) -> None:
        if members:
            await self._redis.srem(f"{self._prefix}set:{key}", *members)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _window(at: float | None, seconds: int) -> int:
    return int(time.time() if at is None else at) // seconds * seconds


def shared_state(engine: AsyncEngine, redis_url: str | None, *, issuer: str) -> SharedState:
    """Redis keys carry a prefix drawn from the issuer, so that two deployments sharing one Redis
    (a test and a live gateway, two councils) never share a replay store or a counter."""
    if not redis_url:
        return DatabaseState(engine)
    return RedisState(redis_url, prefix=f"gateway:{hashlib.sha256(issuer.encode()).hexdigest()[:12]}:")
