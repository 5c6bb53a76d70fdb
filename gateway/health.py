"""What `/readyz` checks: whether this process can answer a partner now, with its audit event.

- the database answers (`SELECT 1` on the request pool);
- the ledger takes a write: a chain, an event and a disclosure row are inserted through the ledger's
  own connections in a transaction that is then rolled back, so the privileges, the triggers, the
  month's partitions and the locks are all exercised and nothing is left behind;
- Redis answers PING, when one is configured;
- agreements are loaded and at least one is in force today.

Each check has a time limit, so that a hung database makes the pod unready rather than the probe
time out. The answer names the checks and counts, never an agreement id or an error message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.events import now_text
from gateway.audit.tables import audit_chains, audit_disclosures, audit_events
from gateway.state import SharedState
from policies import Agreement
from policies.evaluator import out_of_force

log = logging.getLogger("gateway.health")

CHECK_SECONDS: Final = 2.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    agreements_loaded: int
    agreements_in_force: int

    def body(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ready else "unready",
            "checks": self.checks,
            "agreements": {"loaded": self.agreements_loaded, "in_force": self.agreements_in_force},
        }


@dataclass(frozen=True)
class ReadinessProbe:
    engine: AsyncEngine
    ledger_engine: AsyncEngine | None  # None: the ledger is off (benchmarks only)
    state: SharedState
    redis_configured: bool
    agreements: Mapping[str, Agreement]
    today: Callable[[], date]

    async def check(self) -> Readiness:
        checks = {
            "database": await _timed("database", self._database()),
            "ledger": await _timed("ledger", self._ledger()) if self.ledger_engine is not None else "off",
        }
        if self.redis_configured:
            checks["redis"] = await _timed("redis", self.state.ping())
        today = self.today()
        in_force = sum(1 for a in self.agreements.values() if out_of_force(a, today=today) is None)
        checks["agreements"] = "ok" if in_force else "none in force"
        ready = all(value in ("ok", "off") for value in checks.values())
        return Readiness(ready, checks, len(self.agreements), in_force)

    async def _database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _ledger(self) -> None:
        assert self.ledger_engine is not None
        probe = "readyz-" + secrets.token_hex(12)
        now = now_text()
        async with self.ledger_engine.connect() as conn:
            transaction = await conn.begin()
            try:
                if conn.dialect.name == "postgresql":
                    # A lock held on the ledger makes the probe fail quickly, not wait for it.
                    await conn.execute(text("SET LOCAL lock_timeout = '1500ms'"))
                await conn.execute(
                    insert(audit_chains).values(
                        chain_id=probe, started_at=now, host="readyz", process_id=0, writer="readyz"
                    )
                )
                await conn.execute(
                    insert(audit_events).values(
                        id=probe[:32],
                        chain_id=probe,
                        seq=1,
                        prev_hash="0" * 64,
                        hash="0" * 64,
                        occurred_at=now,
                        recorded_at=now,
                        endpoint="readyz",
                        fields_disclosed="[]",
                        fields_withheld="[]",
                        people_count=1,
                        outcome="allowed",
                        http_status=200,
                        latency_us=0,
                    )
                )
                await conn.execute(
                    insert(audit_disclosures).values(
                        event_id=probe[:32], recorded_at=now, person_id=0, fields="[]"
                    )
                )
            finally:
                await transaction.rollback()


async def _timed(name: str, check: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_SECONDS)
    except Exception as error:
        # By type only: a driver's message can quote a statement.
        log.warning("not ready", extra={"check": name, "error_type": type(error).__name__})
        return "timeout" if isinstance(error, TimeoutError) else "failed"
    return "ok"
