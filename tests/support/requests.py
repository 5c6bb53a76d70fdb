"""Requests as a hostile or unlucky client sends them, and the ledger rows they leave.

`raw_asgi` drives the app with hand-made ASGI messages (a body that never arrives, bytes httpx
would refuse to send); `event_of` and `events_of_token` read back what the ledger recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message

from gateway.audit.tables import audit_events


def jti_of(token: str) -> str:
    """The `jti` of an access token the gateway issued (read, not verified: the test got it itself)."""
    segment = token.split(".")[1]
    jti = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["jti"]
    assert isinstance(jti, str)
    return jti


async def event_of(engine: AsyncEngine, event_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).first()
    return None if row is None else dict(row._mapping)


async def events_of_token(engine: AsyncEngine, jti: str, *, at_least: int = 1) -> list[dict[str, Any]]:
    """The /graphql events recorded for requests that carried this token (not the token's own
    issuance, which names it too), waiting up to 10 s for them."""
    deadline = time.monotonic() + 10
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit_events)
                    .where(audit_events.c.token_jti == jti, audit_events.c.endpoint == "graphql")
                    .order_by(audit_events.c.occurred_at)
                )
            ).all()
        if len(rows) >= at_least or time.monotonic() > deadline:
            return [dict(row._mapping) for row in rows]
        await asyncio.sleep(0.05)


async def raw_asgi(
    app: ASGIApp,
    *,
    method: str = "POST",
    path: str = "/graphql",
    query_string: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes | None = b"",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
) -> tuple[int, dict[str, str], bytes]:
    """One request as ASGI messages. `body=None`: the client disconnects instead of sending one."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": client,
        "server": ("testserver", 80),
    }
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if body is None or delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), answer_headers, content
