"""Offline verification of the access ledger, chain by chain.

For every chain: sequence numbers run 1, 2, 3... without a gap; each event's hash, recomputed from
its stored columns and disclosures, equals the stored hash; each event names its predecessor's
hash; and every checkpoint carries a valid signature by one of the given public keys over a head
that is in the chain. The first failure is named by event id and position:

- an UPDATE of an event or of one of its disclosures: that event's content no longer matches;
- a DELETE in the middle: a gap, named by the event that follows it;
- a DELETE of the newest events: a signed checkpoint that names a position the chain no longer has.

Events written after a chain's last checkpoint are protected by the chain alone, so deleting the
very newest of them cannot be detected here; checkpoints are written every 1,000 events, every
minute and at shutdown to keep that window small.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.keys import ALGORITHM
from gateway.ledger import GENESIS, checkpoint_payload, event_hash
from gateway.ledger_tables import audit_chains, audit_checkpoints, audit_disclosures, audit_events

_BATCH: Final = 2_000


@dataclass(frozen=True, slots=True)
class ChainReport:
    chain_id: str
    events: int
    checkpoints: int
    problem: str | None = None
    event_id: str | None = None
    seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.ok:
            return f"chain {self.chain_id}: {self.events} events, {self.checkpoints} checkpoints: intact"
        where = f"event {self.event_id} (seq {self.seq})" if self.event_id else f"seq {self.seq}"
        return f"chain {self.chain_id}: FAILED at {where}: {self.problem}"


async def verify_ledger(engine: AsyncEngine, keys: KeySet) -> list[ChainReport]:
    async with engine.connect() as conn:
        registered = {row.chain_id for row in await conn.execute(select(audit_chains.c.chain_id))}
        written = {row.chain_id for row in await conn.execute(select(audit_events.c.chain_id).distinct())}
    reports = []
    for chain_id in sorted(registered | written):
        reports.append(await _verify_chain(engine, chain_id, keys, registered=chain_id in registered))
    return reports


async def _verify_chain(engine: AsyncEngine, chain_id: str, keys: KeySet, *, registered: bool) -> ChainReport:
    async with engine.connect() as conn:
        checkpoints = [
            dict(row._mapping)
            for row in await conn.execute(
                select(audit_checkpoints)
                .where(audit_checkpoints.c.chain_id == chain_id)
                .order_by(audit_checkpoints.c.seq)
            )
        ]
    if not registered:
        return ChainReport(chain_id, 0, len(checkpoints), "events of a chain that was never registered")
    for checkpoint in checkpoints:
        if not _signature_holds(checkpoint, keys):
            return ChainReport(
                chain_id,
                0,
                len(checkpoints),
                "a checkpoint's signature does not verify",
                seq=int(checkpoint["seq"]),
            )
    wanted = {int(c["seq"]): c["head_hash"] for c in checkpoints}

    expected_seq, prev_hash, count = 1, GENESIS, 0
    async for row, disclosures in _events(engine, chain_id):
        seq = int(row["seq"])
        if seq != expected_seq:
            return ChainReport(
                chain_id, count, len(checkpoints),
                f"events {expected_seq} to {seq - 1} are missing (deleted)", row["id"], seq,
            )  # fmt: skip
        if row["prev_hash"] != prev_hash:
            return ChainReport(
                chain_id, count, len(checkpoints),
                "does not follow from the event before it (altered or deleted)", row["id"], seq,
            )  # fmt: skip
        if event_hash(row, disclosures) != row["hash"]:
            return ChainReport(
                chain_id, count, len(checkpoints),
                "its content or its disclosures were altered after it was written", row["id"], seq,
            )  # fmt: skip
        if seq in wanted and wanted.pop(seq) != row["hash"]:
            return ChainReport(
                chain_id, count, len(checkpoints), "differs from the head a checkpoint signed", row["id"], seq
            )
        prev_hash, expected_seq, count = row["hash"], seq + 1, count + 1
    if wanted:
        missing = min(wanted)
        return ChainReport(
            chain_id, count, len(checkpoints),
            f"a signed checkpoint names event {missing}, which is missing (the newest events were deleted)",
            seq=missing,
        )  # fmt: skip
    return ChainReport(chain_id, count, len(checkpoints))


async def _events(
    engine: AsyncEngine, chain_id: str
) -> AsyncIterator[tuple[dict[str, Any], list[tuple[int, str]]]]:
    after = 0
    while True:
        async with engine.connect() as conn:
            rows = [
                dict(row._mapping)
                for row in await conn.execute(
                    select(audit_events)
                    .where(audit_events.c.chain_id == chain_id, audit_events.c.seq > after)
                    .order_by(audit_events.c.seq)
                    .limit(_BATCH)
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
        after = int(rows[-1]["seq"])


def _signature_holds(checkpoint: dict[str, Any], keys: KeySet) -> bool:
    try:
        signed = jws.deserialize_compact(checkpoint["signature"], keys, algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return False
    expected = checkpoint_payload(
        checkpoint["chain_id"], int(checkpoint["seq"]), checkpoint["head_hash"], checkpoint["signed_at"]
    )
    return bool(signed.payload == expected)
