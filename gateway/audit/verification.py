"""Offline verification of the access ledger, chain by chain.

For every chain: sequence numbers run 1, 2, 3... without a gap; each event's hash, recomputed from
its stored columns and disclosures, equals the stored hash; each event names its predecessor's
hash; every checkpoint carries a valid signature by one of the given public keys over a head that is
in the chain; and nothing follows a chain's final checkpoint (signed when its writer shut down).
The first failure is named by event id and position:

- an UPDATE of an event or of one of its disclosures: that event's content no longer matches;
- a DELETE in the middle: a gap, named by the event that follows it;
- a DELETE of the newest events: a signed checkpoint that names a position the chain no longer has;
- an INSERT after a chain was closed: an event after its final checkpoint.

Events after a chain's last checkpoint are protected by the chain alone: a live writer signs every
minute, so an unsigned tail older than that means the writer died or the events were forged. Such
tails are reported; with `strict_age` they fail. A chain sealed for a writer that died ends in a
final checkpoint marked `abandoned`, reported with its reason. A DBA who deletes a whole chain, its
registration and its checkpoints included, is not detected here: the witness finds that
(`gateway.audit.witness`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import exists, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.events import GENESIS, checkpoint_payload, event_hash, is_chain_id, parse_time_text
from gateway.audit.retention import RETENTION_TYPE, retention_payload
from gateway.audit.tables import (
    audit_chains,
    audit_checkpoints,
    audit_disclosures,
    audit_events,
    audit_retention,
)
from gateway.keys import ALGORITHM

_BATCH: Final = 2_000
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class ChainReport:
    chain_id: str
    events: int
    checkpoints: int
    problem: str | None = None
    event_id: str | None = None
    seq: int | None = None
    closed: bool = False
    unsigned_events: int = 0  # events after the last checkpoint
    unsigned_since: str | None = None  # time of the oldest of them
    abandoned: str | None = None  # the chain was sealed for a writer that died: why, and by whom
    dropped: int = 0  # events before the first kept, dropped by ledger retention (signed record)
    sealed_unsigned: int = 0  # of an abandoned chain: events its writer never signed, sealed by another

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        """One line; whatever the database supplied (ids, reasons) is shown with control characters
        replaced, so that stored text cannot drive the operator's terminal."""
        chain = printable(self.chain_id)
        if not self.ok:
            if self.event_id is None and self.seq is None:
                return f"{chain}: FAILED: {self.problem}"
            where = (
                f"event {printable(self.event_id)} (seq {self.seq})" if self.event_id else f"seq {self.seq}"
            )
            return f"chain {chain}: FAILED at {where}: {self.problem}"
        state = "closed" if self.closed else "open"
        last = self.dropped + self.events
        if self.abandoned is not None:
            state = f"closed after its writer stopped at event {last} ({printable(self.abandoned)})"
            if self.sealed_unsigned:
                first = last - self.sealed_unsigned + 1
                state += (
                    f"; events {first} to {last} were sealed without their writer's signature "
                    "(the witness cannot vouch for them)"
                )
        tail = (
            f"; {self.unsigned_events} events since {self.unsigned_since} not yet signed"
            if self.unsigned_events
            else ""
        )
        counts = f"{self.events} events, {self.checkpoints} checkpoints"
        if self.dropped and not self.events:
            counts = (
                f"all {self.dropped} events dropped by retention (as signed), {self.checkpoints} checkpoints"
            )
        elif self.dropped:
            counts = (
                f"events {self.dropped + 1} to {last} ({self.dropped} before them dropped by retention, "
                f"as signed), {self.checkpoints} checkpoints"
            )
        return f"chain {chain}: {counts}, {state}: intact{tail}"


def printable(text: str | None) -> str:
    return _UNPRINTABLE.sub("?", text or "")


async def verify_ledger(
    engine: AsyncEngine, keys: KeySet, *, strict_age: timedelta | None = None, now: datetime | None = None
) -> list[ChainReport]:
    """Verify every chain. With `strict_age`, an unsigned tail older than that is a failure."""
    async with engine.connect() as conn:
        # Chains with events first: a chain's registration commits with its first events, so every
        # chain seen here is also seen registered below, however the two reads interleave with writers.
        written = {row.chain_id for row in await conn.execute(select(audit_events.c.chain_id).distinct())}
        registered = {row.chain_id for row in await conn.execute(select(audit_chains.c.chain_id))}
    reports = []
    for chain_id in sorted(registered | written):
        report = await _verify_chain(engine, chain_id, keys, registered=chain_id in registered)
        if report.ok and strict_age is not None and report.unsigned_since is not None:
            moment = now or datetime.now(UTC)
            if moment - parse_time_text(report.unsigned_since) > strict_age:
                report = ChainReport(
                    chain_id, report.events, report.checkpoints,
                    f"{report.unsigned_events} events older than {strict_age} were never signed "
                    "(the writer died, or they were forged)",
                    seq=report.dropped + report.events - report.unsigned_events + 1,
                )  # fmt: skip
        reports.append(report)
    reports += await _ledger_wide(engine)
    return reports


async def _ledger_wide(engine: AsyncEngine) -> list[ChainReport]:
    """What no chain's walk can see. On PostgreSQL the ledger's keys hold within a month only (its
    partitions), so an event id used twice in different months, or a disclosure row that no event
    holds (no hash covers it), is looked for here."""
    async with engine.connect() as conn:
        orphans = await conn.execute(
            select(func.count())
            .select_from(audit_disclosures)
            .where(~exists().where(audit_events.c.id == audit_disclosures.c.event_id))
        )
        repeated = select(audit_events.c.id).group_by(audit_events.c.id).having(func.count() > 1).subquery()
        twice = await conn.execute(select(func.count()).select_from(repeated))
        counts = int(orphans.scalar_one()), int(twice.scalar_one())
    problems = []
    if counts[0]:
        problems.append(
            ChainReport("the disclosure register", 0, 0, f"{counts[0]} rows name no event (added by hand)")
        )
    if counts[1]:
        problems.append(
            ChainReport("the events", 0, 0, f"{counts[1]} event ids appear more than once (added by hand)")
        )
    return problems


async def _verify_chain(engine: AsyncEngine, chain_id: str, keys: KeySet, *, registered: bool) -> ChainReport:
    async with engine.connect() as conn:
        checkpoints = [
            dict(row._mapping)
            for row in await conn.execute(
                select(audit_checkpoints)
                .where(audit_checkpoints.c.chain_id == chain_id)
                .order_by(audit_checkpoints.c.seq, audit_checkpoints.c.final)
            )
        ]
    count_checkpoints = len(checkpoints)
    if not registered:
        return ChainReport(chain_id, 0, count_checkpoints, "events of a chain that was never registered")
    if not is_chain_id(chain_id):
        return ChainReport(chain_id, 0, count_checkpoints, "a chain id no writer makes (added by hand)")
    for checkpoint in checkpoints:
        if not _signature_holds(checkpoint, keys):
            return ChainReport(
                chain_id,
                0,
                count_checkpoints,
                "a checkpoint's signature does not verify",
                seq=int(checkpoint["seq"]),
            )
    cuts = await _retention_of(engine, chain_id)
    for cut in cuts:
        if not _retention_holds(cut, keys):
            return ChainReport(
                chain_id, 0, count_checkpoints, "a retention record's signature does not verify",
                seq=int(cut["through_seq"]),
            )  # fmt: skip
    finals = [int(c["seq"]) for c in checkpoints if c["final"]]
    if len(finals) > 1:
        return ChainReport(chain_id, 0, count_checkpoints, "the chain was closed twice", seq=finals[1])
    closed_at = finals[0] if finals else None
    abandoned = next((c["abandoned"] for c in checkpoints if c["final"] and c["abandoned"] is not None), None)
    wanted = {int(c["seq"]): c["head_hash"] for c in checkpoints}
    last_signed = max(wanted, default=0)
    signed_by_writer = max((int(c["seq"]) for c in checkpoints if c["abandoned"] is None), default=0)

    expected_seq, prev_hash, count = 1, GENESIS, 0
    dropped = 0
    if cuts:
        # Retention dropped the chain's first events: it goes on from the signed head of the last one.
        last = max(cuts, key=lambda cut: int(cut["through_seq"]))
        dropped, prev_hash = int(last["through_seq"]), last["head_hash"]
        expected_seq = dropped + 1
        if dropped in wanted and wanted[dropped] != prev_hash:
            return ChainReport(
                chain_id, 0, count_checkpoints,
                "a retention record's head differs from the checkpoint signed there", seq=dropped,
            )  # fmt: skip
        wanted = {seq: head for seq, head in wanted.items() if seq > dropped}
    unsigned_since: str | None = None
    async for row, disclosures in _events(engine, chain_id):
        seq = int(row["seq"])
        if seq < expected_seq:
            return ChainReport(
                chain_id, count, count_checkpoints,
                f"a second event at position {seq}, which the chain already has (added later)",
                row["id"], seq,
            )  # fmt: skip
        if seq != expected_seq:
            return ChainReport(
                chain_id, count, count_checkpoints,
                f"events {expected_seq} to {seq - 1} are missing (deleted)", row["id"], seq,
            )  # fmt: skip
        if closed_at is not None and seq > closed_at:
            return ChainReport(
                chain_id, count, count_checkpoints,
                f"written after the chain was closed at event {closed_at} (added later)", row["id"], seq,
            )  # fmt: skip
        if row["prev_hash"] != prev_hash:
            return ChainReport(
                chain_id, count, count_checkpoints,
                "does not follow from the event before it (altered or deleted)", row["id"], seq,
            )  # fmt: skip
        if event_hash(row, disclosures) != row["hash"]:
            return ChainReport(
                chain_id, count, count_checkpoints,
                "its content or its disclosures were altered after it was written", row["id"], seq,
            )  # fmt: skip
        if seq in wanted and wanted.pop(seq) != row["hash"]:
            return ChainReport(
                chain_id,
                count,
                count_checkpoints,
                "differs from the head a checkpoint signed",
                row["id"],
                seq,
            )
        if seq > last_signed and unsigned_since is None:
            unsigned_since = row["occurred_at"]
        prev_hash, expected_seq, count = row["hash"], seq + 1, count + 1
    if wanted:
        missing = min(wanted)
        return ChainReport(
            chain_id, count, count_checkpoints,
            f"a signed checkpoint names event {missing}, which is missing (the newest events were deleted)",
            seq=missing,
        )  # fmt: skip
    return ChainReport(
        chain_id,
        count,
        count_checkpoints,
        closed=closed_at is not None,
        unsigned_events=max(0, dropped + count - last_signed),
        unsigned_since=unsigned_since,
        abandoned=abandoned,
        sealed_unsigned=max(0, dropped + count - signed_by_writer) if abandoned is not None else 0,
        dropped=dropped,
    )


async def _events(
    engine: AsyncEngine, chain_id: str
) -> AsyncIterator[tuple[dict[str, Any], list[tuple[int, str]]]]:
    # Every row of the chain, in (seq, id) order: a position written twice, or one below 1, is read
    # like any other, and fails.
    after: tuple[int, str] | None = None
    while True:
        query = select(audit_events).where(audit_events.c.chain_id == chain_id)
        if after is not None:
            query = query.where(tuple_(audit_events.c.seq, audit_events.c.id) > tuple_(*after))
        async with engine.connect() as conn:
            rows = [
                dict(row._mapping)
                for row in await conn.execute(
                    query.order_by(audit_events.c.seq, audit_events.c.id).limit(_BATCH)
                )
            ]
            if not rows:
                return
            by_event: dict[str, list[tuple[int, str]]] = {row["id"]: [] for row in rows}
            for d in await conn.execute(
                select(audit_disclosures).where(audit_disclosures.c.event_id.in_(list(by_event)))
            ):
                by_event[d.event_id].append((int(d.person_id), d.fields))
        for row in rows:
            yield row, by_event[row["id"]]
        after = (int(rows[-1]["seq"]), str(rows[-1]["id"]))


async def _retention_of(engine: AsyncEngine, chain_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [
            dict(row._mapping)
            for row in await conn.execute(
                select(audit_retention).where(audit_retention.c.chain_id == chain_id)
            )
        ]


def _retention_holds(cut: dict[str, Any], keys: KeySet) -> bool:
    try:
        signed = jws.deserialize_compact(cut["signature"], keys, algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return False
    if signed.headers().get("typ") != RETENTION_TYPE:
        return False
    expected = retention_payload(
        cut["chain_id"], int(cut["through_seq"]), cut["head_hash"], cut["dropped_before"],
        int(cut["events"]), cut["signed_at"],
    )  # fmt: skip
    return bool(signed.payload == expected)


def _signature_holds(checkpoint: dict[str, Any], keys: KeySet) -> bool:
    try:
        signed = jws.deserialize_compact(checkpoint["signature"], keys, algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return False
    expected = checkpoint_payload(
        checkpoint["chain_id"],
        int(checkpoint["seq"]),
        checkpoint["head_hash"],
        checkpoint["signed_at"],
        bool(checkpoint["final"]),
        checkpoint["abandoned"],
    )
    return bool(signed.payload == expected)
