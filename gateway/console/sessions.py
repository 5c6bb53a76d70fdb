"""Console sign-in sessions, kept on the server: the browser holds a random token, the table its hash.

A session ends at the first of: signing out, `console_session_minutes` after sign-in, or
`console_idle_minutes` without a request. Each carries its own CSRF token, which every form posts back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.console.tables import console_sessions

_TOUCH_EVERY = 60  # seconds: seen_at is written at most once a minute per session


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    token_sha256: str
    reader: str
    issuer: str
    csrf_token: str
    case_reference: str | None
    claims: dict[str, Any]

    def csrf_matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf_token.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, engine: AsyncEngine, *, lifetime_minutes: int, idle_minutes: int) -> None:
        self._engine = engine
        self._lifetime = lifetime_minutes * 60
        self._idle = idle_minutes * 60

    async def start(self, *, reader: str, issuer: str, claims: dict[str, Any]) -> str:
        """A new session; its token, for the browser's cookie only. Expired rows are cleared here."""
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        async with self._engine.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now))
            await conn.execute(
                console_sessions.insert().values(
                    token_sha256=_digest(token),
                    reader=reader,
                    issuer=issuer,
                    claims=json.dumps(claims, sort_keys=True),
                    csrf_token=secrets.token_urlsafe(32),
                    case_reference=None,
                    created_at=now,
                    seen_at=now,
                    expires_at=now + self._lifetime,
                )
            )
        return token

    async def find(self, token: str | None) -> ConsoleSession | None:
        """The live session of this token, or None (unknown, signed out, expired or idle too long)."""
        if not token or len(token) > 100:
            return None
        now = int(time.time())
        digest = _digest(token)
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(console_sessions).where(console_sessions.c.token_sha256 == digest))
            ).first()
        if row is None or row.expires_at <= now or row.seen_at + self._idle <= now:
            return None
        if now - row.seen_at >= _TOUCH_EVERY:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(console_sessions)
                    .where(console_sessions.c.token_sha256 == digest)
                    .values(seen_at=now)
                )
        return ConsoleSession(
            token_sha256=digest,
            reader=row.reader,
            issuer=row.issuer,
            csrf_token=row.csrf_token,
            case_reference=row.case_reference,
            claims=json.loads(row.claims),
        )

    async def set_case_reference(self, session: ConsoleSession, case_reference: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(console_sessions)
                .where(console_sessions.c.token_sha256 == session.token_sha256)
                .values(case_reference=case_reference)
            )

    async def end(self, session: ConsoleSession) -> None:
        await self.end_token_digest(session.token_sha256)

    async def end_token(self, token: str | None) -> None:
        """End the session of this token, if it has one (a new sign-in in the same browser)."""
        if token and len(token) <= 100:
            await self.end_token_digest(_digest(token))

    async def end_token_digest(self, digest: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.token_sha256 == digest))
