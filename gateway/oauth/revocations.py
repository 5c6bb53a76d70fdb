"""Who may use a token on this request: its client enabled, bound to which agreement, the token not revoked.

The agreement a request is served under is the one its client is registered with, not merely what the
token says. `revoked_tokens` holds each revoked token's `jti` until the token would have expired
anyway; a client is disabled by `clients.disabled_at`. Whoever adds or disables a client or revokes a
token (the revocation endpoint, `gateway clients add|disable`) also announces it in the same
transaction.

- PostgreSQL: each gateway process keeps the enabled clients and the revoked tokens in memory and
  LISTENs on a channel; a change is NOTIFYed at commit and reaches every process milliseconds later,
  so no request pays a database round trip to ask. The process that revokes a token refuses it at
  once; a client not in memory (added a moment ago, or disabled) is asked of the database. While the
  listening connection is down, and until everything is read again after it comes back, every
  request asks the database.
- SQLite (one process beside the command line): every request asks the database; it is a local file.

Exceptions:
    TokenRefusedError   the token may not be used; `str()` says why, safe to send back
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    delete,
    exists,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.oauth.clients import REVOCATION_CHANNEL, announce, clients

log = logging.getLogger("gateway.oauth")

CHANNEL: Final = REVOCATION_CHANNEL
_RECONNECT_SECONDS: Final = 1.0
# A revocation is kept this long past its token's expiry: longer than any leeway a verifier allows
# (at most 120 s), so that a revoked token is never accepted again in the leeway after its `exp`.
KEPT_AFTER_EXPIRY: Final = 300

revocation_metadata = MetaData()

revoked_tokens = Table(
    "revoked_tokens",
    revocation_metadata,
    Column("jti", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
)


async def revoke_token(conn: AsyncConnection, *, jti: str, client_id: str, expires_at: int) -> None:
    """Record a revocation in the caller's transaction, and announce it at its commit."""
    already = (await conn.execute(select(exists().where(revoked_tokens.c.jti == jti)))).scalar()
    if not already:
        await conn.execute(
            insert(revoked_tokens).values(
                jti=jti, client_id=client_id, expires_at=expires_at, revoked_at=datetime.now(UTC)
            )
        )
    await announce(conn, f"token:{jti}:{expires_at}")
    await purge_expired(conn)  # the table holds only what can still matter


class TokenRefusedError(Exception):
    pass


class Revocations:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pushed = engine.dialect.name == "postgresql"
        self._synced = False
        self._clients: dict[str, str] = {}  # enabled client id -> its agreement
        self._revoked: dict[str, int] = {}  # jti -> exp
        self._listener: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        if self._pushed:
            self._task = asyncio.create_task(self._keep_listening(), name="revocations-listener")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._drop_listener()

    async def agreement_of(self, *, client_id: str, jti: str) -> str:
        """The agreement of the token's client, if the client is enabled and the token not revoked."""
        agreement = revoked = None
        if self._pushed and self._synced:
            agreement = self._clients.get(client_id)
            revoked = self._revoked.get(jti)
        # A client not known here is asked of the database: one added a moment ago, whose notice is
        # still on its way, must not be refused (a disabled client's tokens pay the round trip).
        if agreement is None:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(clients.c.agreement_id).where(
                            clients.c.client_id == client_id, clients.c.disabled_at.is_(None)
                        )
                    )
                ).first()
                agreement = None if row is None else str(row.agreement_id)
                found = (
                    await conn.execute(select(revoked_tokens.c.expires_at).where(revoked_tokens.c.jti == jti))
                ).first()
                revoked = None if found is None else int(found.expires_at)
        if agreement is None:
            raise TokenRefusedError("the client is not enabled")
        if revoked is not None:  # kept past the token's expiry and its leeway: no time to compare
            raise TokenRefusedError("the token was revoked")
        return agreement

    def revoked_here(self, *, jti: str, expires_at: int) -> None:
        """A revocation this process committed: refused here at once, before its own notice returns."""
        if self._pushed:
            self._revoked[jti] = expires_at

    @property
    def is_pushed(self) -> bool:
        """Answered from memory, kept current by the database's notifications."""
        return self._pushed and self._synced

    async def _keep_listening(self) -> None:
        while not self._closed:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("revocation notices unavailable; asking the database per request", exc_info=True)
            self._synced = False
            await self._drop_listener()
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen(self) -> None:
        conn = await self._engine.connect()
        self._listener = conn
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        lost = asyncio.Event()
        await driver.add_listener(CHANNEL, self._noticed)
        driver.add_termination_listener(lambda _connection: lost.set())
        await self._read_all(conn)  # after LISTEN: nothing announced from now on can be missed
        self._synced = True
        while not lost.is_set() and not self._closed:
            try:
                await asyncio.wait_for(lost.wait(), timeout=30)
            except TimeoutError:
                await conn.execute(text("SELECT 1"))  # notices a dead connection
                await conn.commit()
                self._prune()

    async def _read_all(self, conn: AsyncConnection) -> None:
        enabled = await conn.execute(
            select(clients.c.client_id, clients.c.agreement_id).where(clients.c.disabled_at.is_(None))
        )
        revoked = await conn.execute(
            select(revoked_tokens.c.jti, revoked_tokens.c.expires_at).where(
                revoked_tokens.c.expires_at >= int(time.time()) - KEPT_AFTER_EXPIRY
            )
        )
        self._clients = {row.client_id: row.agreement_id for row in enabled}
        self._revoked = {row.jti: int(row.expires_at) for row in revoked}
        await conn.commit()

    def _noticed(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "client-disabled":
            self._clients.pop(rest, None)
        elif kind == "client-added":
            client_id, _, agreement_id = rest.partition(":")
            self._clients[client_id] = agreement_id
        elif kind == "token":
            jti, _, expires = rest.rpartition(":")
            if jti and expires.isdigit():
                self._revoked[jti] = int(expires)

    def _prune(self) -> None:
        now = time.time() - KEPT_AFTER_EXPIRY
        self._revoked = {jti: expires for jti, expires in self._revoked.items() if expires >= now}

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()


async def purge_expired(conn: AsyncConnection) -> None:
    await conn.execute(
        delete(revoked_tokens).where(revoked_tokens.c.expires_at < int(time.time()) - KEPT_AFTER_EXPIRY)
    )
