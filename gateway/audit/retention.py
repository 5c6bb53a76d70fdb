"""Retention of the ledger itself: whole months of events and disclosures dropped, with a signed
record of what each chain lost, so that verification still passes and still finds anything else.

PostgreSQL only: the ledger is partitioned by month there (migration 0007), and a month past
retention is dropped as two partitions (its events and its disclosures) in one transaction, never
deleted row by row. Months are UTC months of `recorded_at`, the time the writer committed each
event, which never goes back along a chain (tables.py): so what a month's end cuts off each chain is
always its first events. Before anything is dropped, each chain's dropped events must be a prefix of the
chain (positions 1..n, nothing kept before them), and the first event kept must follow the last one
dropped; otherwise nothing is dropped. For each chain the run writes a row of `audit_retention`:
the last position dropped, its hash, the first month kept, how many events went, signed with the
gateway's signing key like a checkpoint. Verification takes each chain up from that signed head.

Dropping needs the migrator role (the partitions' owner); the application role cannot.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from joserfc import jws
from sqlalchemy import exc, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.errors import AuditError
from gateway.audit.events import now_text
from gateway.audit.tables import PARTITIONED_TABLES, audit_events, audit_retention
from gateway.keys import ALGORITHM, SigningKeys

RETENTION_TYPE: Final = "audit-retention+jws"
_LOCK_NOT_AVAILABLE: Final = "55P03"
_LOCK_WAIT_MS: Final = 1_000
_PARTITION: Final = re.compile(r"(audit_events|audit_disclosures)_y(\d{4})m(\d{2})")


@dataclass(frozen=True)
class ChainCut:
    chain_id: str
    through_seq: int
    head_hash: str
    events: int


@dataclass(frozen=True)
class RetentionPlan:
    keep_from: str  # YYYY-MM: the first month kept
    months: tuple[str, ...]  # YYYY-MM of each month dropped
    chains: tuple[ChainCut, ...]
    events: int
    disclosures: int

    def describe(self) -> dict[str, Any]:
        return {
            "keep_from": self.keep_from,
            "months_dropped": list(self.months),
            "chains": len(self.chains),
            "events": self.events,
            "disclosures": self.disclosures,
        }


def first_month_kept(today: date, months: int) -> str:
    index = today.year * 12 + today.month - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


async def plan_retention(engine: AsyncEngine, *, months: int, today: date) -> RetentionPlan:
    """What a run would drop today, keeping `months` whole months before the current one."""
    async with engine.connect() as conn:
        return await _plan(conn, first_month_kept(today, months))


async def apply_retention(
    engine: AsyncEngine,
    signing: SigningKeys,
    *,
    months: int,
    today: date,
    attempts: int = 5,
    backoff_seconds: float = 2.0,
) -> RetentionPlan:
    """Drop the months past retention and record what each chain lost, in one transaction; while a
    reader holds the ledger, give up within a second and try again, up to `attempts` times."""
    keep_from = first_month_kept(today, months)
    for attempt in range(attempts):
        try:
            return await _apply(engine, signing, keep_from)
        except exc.DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            # A reader holds the ledger: rather than queue every ledger write behind this run's
            # exclusive locks until it finishes, let go and try again a little later.
            await asyncio.sleep(backoff_seconds * (attempt + 1))
    raise AuditError(
        f"the ledger stayed busy (a long query held it) through {attempts} attempts: nothing was "
        "dropped; try again later"
    )


async def _apply(engine: AsyncEngine, signing: SigningKeys, keep_from: str) -> RetentionPlan:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            taken = await conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext('audit_retention'))"))
            if not taken.scalar_one():
                raise AuditError(
                    "another retention run holds the ledger: nothing was dropped; try again later"
                )
            # Dropping a partition locks its parent exclusively, and every ledger write waits behind
            # that lock while it waits for a reader: wait briefly, then give up (and try again).
            await conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_WAIT_MS}ms'"))
        plan = await _plan(conn, keep_from)
        for cut in plan.chains:
            await conn.execute(insert(audit_retention).values(**sign_cut(signing, cut, keep_from)))
        for month in plan.months:
            suffix = "_y" + month.replace("-", "m")
            # The register first: nothing may be left pointing at events that are gone.
            for parent in reversed(PARTITIONED_TABLES):
                await conn.execute(text(f'DROP TABLE "{parent}{suffix}"'))
    return plan


async def _plan(conn: AsyncConnection, keep_from: str) -> RetentionPlan:
    if conn.dialect.name != "postgresql":
        raise AuditError(
            "ledger retention drops monthly partitions, which only the PostgreSQL ledger has; "
            "a SQLite ledger is kept whole"
        )
    months = sorted(month for month in await _partition_months(conn, "audit_events") if month < keep_from)
    register = await _partition_months(conn, "audit_disclosures")
    missing = [month for month in months if month not in register]
    if missing:
        raise AuditError(f"the disclosure register has no partition for {missing[0]}: not dropping")
    if not months:
        return RetentionPlan(keep_from, (), (), 0, 0)
    dropped = (
        select(
            audit_events.c.chain_id,
            func.max(audit_events.c.seq).label("through"),
            func.count().label("events"),
        )
        .where(audit_events.c.recorded_at < keep_from)
        .group_by(audit_events.c.chain_id)
        .subquery()
    )
    cuts: list[ChainCut] = []
    for row in await conn.execute(
        select(dropped.c.chain_id, dropped.c.through, dropped.c.events, audit_events.c.hash)
        .join(
            audit_events,
            (audit_events.c.chain_id == dropped.c.chain_id) & (audit_events.c.seq == dropped.c.through),
        )
        .where(audit_events.c.recorded_at < keep_from)
        .order_by(dropped.c.chain_id)
    ):
        cuts.append(ChainCut(row.chain_id, int(row.through), row.hash, int(row.events)))
    for cut in cuts:
        await _check_prefix(conn, cut, keep_from)
    disclosures = (
        await conn.execute(
            text("SELECT count(*) FROM audit_disclosures WHERE recorded_at < :keep"), {"keep": keep_from}
        )
    ).scalar_one()
    return RetentionPlan(
        keep_from, tuple(months), tuple(cuts), sum(cut.events for cut in cuts), int(disclosures)
    )


async def _check_prefix(conn: AsyncConnection, cut: ChainCut, keep_from: str) -> None:
    """The chain's dropped events are its positions up to `through_seq`, and the rest follows on."""
    earlier = await _previous_cut(conn, cut.chain_id)
    expected = cut.through_seq - earlier
    if cut.events != expected:
        raise AuditError(
            f"chain {cut.chain_id}: the events before {keep_from} are not its first {expected} "
            "(out of time order, or some are already missing): not dropping; run `gateway audit verify`"
        )
    following = (
        await conn.execute(
            select(audit_events.c.prev_hash, audit_events.c.recorded_at).where(
                audit_events.c.chain_id == cut.chain_id, audit_events.c.seq == cut.through_seq + 1
            )
        )
    ).first()
    if following is not None and (following.prev_hash != cut.head_hash or following.recorded_at < keep_from):
        raise AuditError(
            f"chain {cut.chain_id}: the first event kept does not follow the last one dropped: "
            "not dropping; run `gateway audit verify`"
        )


async def _previous_cut(conn: AsyncConnection, chain_id: str) -> int:
    found = await conn.execute(
        select(func.max(audit_retention.c.through_seq)).where(audit_retention.c.chain_id == chain_id)
    )
    return int(found.scalar() or 0)


async def _partition_months(conn: AsyncConnection, parent: str) -> set[str]:
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": parent},
    )
    months = set()
    for (name,) in rows:
        matched = _PARTITION.fullmatch(name)
        if matched and matched.group(1) == parent:
            months.add(f"{matched.group(2)}-{matched.group(3)}")
    return months


def retention_payload(
    chain_id: str, through_seq: int, head_hash: str, dropped_before: str, events: int, signed_at: str
) -> bytes:
    body = {
        "chain_id": chain_id, "through_seq": through_seq, "head_hash": head_hash,
        "dropped_before": dropped_before, "events": events, "signed_at": signed_at,
    }  # fmt: skip
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_cut(signing: SigningKeys, cut: ChainCut, keep_from: str) -> dict[str, Any]:
    key = signing.active
    signed_at = now_text()
    payload = retention_payload(
        cut.chain_id, cut.through_seq, cut.head_hash, keep_from, cut.events, signed_at
    )
    signature = jws.serialize_compact(
        {"alg": ALGORITHM, "kid": key.kid, "typ": RETENTION_TYPE}, payload, key, algorithms=[ALGORITHM]
    )
    return {
        "chain_id": cut.chain_id, "through_seq": cut.through_seq, "head_hash": cut.head_hash,
        "dropped_before": keep_from, "events": cut.events, "signed_at": signed_at,
        "key_id": key.kid or "", "signature": signature,
    }  # fmt: skip
