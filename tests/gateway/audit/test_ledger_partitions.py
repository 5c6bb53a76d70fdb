"""The ledger at scale (PostgreSQL): events and disclosures partitioned by month, a ledger written
before the partitioning carried over intact, and retention that drops whole months, leaves a signed
record, and keeps verification both passing and finding anything else that goes missing.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chains import sign_checkpoint
from gateway.audit.events import GENESIS, EventDraft, event_row
from gateway.audit.retention import apply_retention, first_month_kept, plan_retention
from gateway.audit.tables import (
    audit_chains,
    audit_checkpoints,
    audit_disclosures,
    audit_events,
    audit_retention,
)
from gateway.audit.verification import verify_ledger
from gateway.db import create_engine, upgrade
from gateway.keys import SigningKeys, generate_key
from tests.support.databases import postgres_database
from tests.support.processes import GATEWAY

pytestmark = pytest.mark.postgres

TODAY = date(2026, 11, 30)


@pytest.fixture
async def ledger_engine() -> AsyncIterator[AsyncEngine]:
    async with postgres_database() as url:
        engine = create_engine(url)
        yield engine
        await engine.dispose()


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.from_keys([generate_key()])


def _chain_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def _write_chain(
    engine: AsyncEngine,
    keys: SigningKeys,
    chain: str,
    times: list[str],
    *,
    final: bool = False,
    with_occurred_at: bool = True,
) -> list[dict[str, object]]:
    """A chain of events at the given times (each disclosing one person), checkpointed at its end."""
    rows, prev = [], GENESIS
    async with engine.begin() as conn:
        await conn.execute(
            insert(audit_chains).values(
                chain_id=chain, started_at=times[0], host="test", process_id=1, writer="gateway"
            )
        )
        for seq, moment in enumerate(times, start=1):
            draft = EventDraft(
                endpoint="graphql", outcome="allowed", http_status=200, latency_us=1, occurred_at=moment,
                agreement_id="ons-evaluation", fields_disclosed=("givenName",),
                disclosures=((1000 + seq, ("givenName",)),),
            )  # fmt: skip
            row = event_row(draft, chain_id=chain, seq=seq, prev_hash=prev)
            prev = row["hash"]
            rows.append(row)
            await conn.execute(insert(audit_events).values(**row))
            disclosure = {"event_id": row["id"], "person_id": 1000 + seq, "fields": "givenName"}
            if with_occurred_at:
                disclosure["occurred_at"] = moment
            await conn.execute(insert(audit_disclosures).values(**disclosure))
        checkpoint = sign_checkpoint(keys, chain, len(times), str(prev), final=final)
        await conn.execute(insert(audit_checkpoints).values(**checkpoint))
    return rows


async def _partitions(engine: AsyncEngine, parent: str) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:p AS regclass)"
            ),
            {"p": parent},
        )
        return {name for (name,) in found}


async def _add_month(engine: AsyncEngine, month: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT audit_add_month(:m)"), {"m": date.fromisoformat(f"{month}-01")})


async def test_the_ledger_is_partitioned_by_month_and_every_partition_refuses_truncate(
    ledger_engine: AsyncEngine,
) -> None:
    await upgrade(ledger_engine)
    async with ledger_engine.connect() as conn:
        strategy = dict(
            (
                await conn.execute(
                    text(
                        "SELECT c.relname, p.partstrat::text FROM pg_partitioned_table p "
                        "JOIN pg_class c ON c.oid = p.partrelid"
                    )
                )
            ).all()
        )
    assert strategy == {"audit_events": "r", "audit_disclosures": "r"}
    now = date.today()
    months = []
    for ahead in range(4):  # this month and three ahead
        index = now.year * 12 + now.month - 1 + ahead
        months.append(f"y{index // 12:04d}m{index % 12 + 1:02d}")
    for parent in ("audit_events", "audit_disclosures"):
        assert {f"{parent}_{m}" for m in months} <= await _partitions(ledger_engine, parent)
    for table in (f"audit_events_{months[0]}", f"audit_disclosures_{months[0]}", "audit_events"):
        async with ledger_engine.connect() as conn:
            with pytest.raises(Exception, match="append-only"):
                await conn.execute(text(f"TRUNCATE {table}"))
    # An event of a month with no partition cannot be written: the writer makes them ahead of time.
    keys = SigningKeys.from_keys([generate_key()])
    with pytest.raises(Exception, match="no partition"):
        await _write_chain(ledger_engine, keys, _chain_id(9), ["2031-01-05T10:00:00.000000Z"])


async def test_a_ledger_written_before_partitioning_is_carried_over_and_verifies(
    ledger_engine: AsyncEngine, keys: SigningKeys
) -> None:
    await upgrade(ledger_engine, "0006")
    times = ["2025-06-30T23:59:59.999999Z", "2025-07-01T00:00:00.000000Z", "2026-11-02T08:00:00.000000Z"]
    await _write_chain(ledger_engine, keys, _chain_id(1), times, with_occurred_at=False)
    await upgrade(ledger_engine)
    reports = await verify_ledger(ledger_engine, keys.audit_verification)
    assert [(r.ok, r.events) for r in reports] == [(True, 3)], [r.describe() for r in reports]
    assert {"audit_events_y2025m06", "audit_events_y2025m07"} <= await _partitions(
        ledger_engine, "audit_events"
    )
    async with ledger_engine.connect() as conn:
        placed = (
            await conn.execute(text("SELECT tableoid::regclass::text, occurred_at FROM audit_disclosures"))
        ).all()
    assert sorted(placed) == [
        ("audit_disclosures_y2025m06", times[0]),
        ("audit_disclosures_y2025m07", times[1]),
        ("audit_disclosures_y2026m11", times[2]),
    ]


async def test_retention_drops_whole_months_with_a_signed_record_and_verification_still_catches_the_rest(
    ledger_engine: AsyncEngine, keys: SigningKeys
) -> None:
    await upgrade(ledger_engine)
    for month in ("2018-01", "2018-02", "2019-10", "2019-11"):
        await _add_month(ledger_engine, month)
    # A chain that spans the boundary, and one wholly before it (closed).
    spanning = await _write_chain(
        ledger_engine, keys, _chain_id(1),
        ["2018-01-10T09:00:00.000000Z", "2018-02-11T09:00:00.000000Z", "2019-10-31T23:59:59.999999Z",
         "2019-11-01T00:00:00.000000Z", "2026-11-29T12:00:00.000000Z"],
    )  # fmt: skip
    await _write_chain(ledger_engine, keys, _chain_id(2), ["2018-01-12T09:00:00.000000Z"], final=True)
    assert first_month_kept(TODAY, 84) == "2019-11"

    planned = await plan_retention(ledger_engine, months=84, today=TODAY)
    assert planned.describe() == {
        "keep_from": "2019-11", "months_dropped": ["2018-01", "2018-02", "2019-10"], "chains": 2,
        "events": 4, "disclosures": 4,
    }  # fmt: skip
    assert "audit_events_y2018m01" in await _partitions(ledger_engine, "audit_events")  # a plan drops nothing

    done = await apply_retention(ledger_engine, keys, months=84, today=TODAY)
    assert done.describe() == planned.describe()
    for parent in ("audit_events", "audit_disclosures"):
        left = await _partitions(ledger_engine, parent)
        assert not {f"{parent}_y2018m01", f"{parent}_y2018m02", f"{parent}_y2019m10"} & left
        assert f"{parent}_y2019m11" in left
    async with ledger_engine.connect() as conn:
        records = {
            row.chain_id: (row.through_seq, row.head_hash, row.events, row.dropped_before)
            for row in await conn.execute(select(audit_retention))
        }
    assert records[_chain_id(1)] == (3, spanning[2]["hash"], 3, "2019-11")
    assert records[_chain_id(2)][0::2] == (1, 1)

    reports = {r.chain_id: r for r in await verify_ledger(ledger_engine, keys.audit_verification)}
    assert all(r.ok for r in reports.values()), [r.describe() for r in reports.values()]
    assert (reports[_chain_id(1)].dropped, reports[_chain_id(1)].events) == (3, 2)
    assert "events 4 to 5 (3 before them dropped by retention" in reports[_chain_id(1)].describe()

    # A second run finds nothing more to drop.
    again = await apply_retention(ledger_engine, keys, months=84, today=TODAY)
    assert again.describe()["months_dropped"] == []

    # Anything else missing is still found: the first event kept, deleted by a DBA.
    async with ledger_engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        await conn.execute(
            text("DELETE FROM audit_events WHERE seq = 4 AND chain_id = :c"), {"c": _chain_id(1)}
        )
        await conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
    reports = {r.chain_id: r for r in await verify_ledger(ledger_engine, keys.audit_verification)}
    assert not reports[_chain_id(1)].ok
    assert "events 4 to 4 are missing" in (reports[_chain_id(1)].problem or "")


async def test_a_forged_retention_record_fails_verification(
    ledger_engine: AsyncEngine, keys: SigningKeys
) -> None:
    """Deleting a chain's first events and writing a record to cover it needs the signing key."""
    await upgrade(ledger_engine)
    await _add_month(ledger_engine, "2018-01")
    rows = await _write_chain(
        ledger_engine, keys, _chain_id(3), ["2018-01-10T09:00:00.000000Z", "2026-11-29T12:00:00.000000Z"]
    )
    other = SigningKeys.from_keys([generate_key()])
    forged = await apply_retention(ledger_engine, other, months=84, today=TODAY)
    assert forged.events == 1
    reports = await verify_ledger(ledger_engine, keys.audit_verification)
    assert [(r.ok, r.problem) for r in reports] == [(False, "a retention record's signature does not verify")]
    assert rows[0]["seq"] == 1


def test_retention_on_sqlite_is_one_error_line(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        "GATEWAY_SIGNING_KEY_FILE": str(tmp_path / "k.json"),
        "GATEWAY_AUDIT_WITNESS": "none",
    }
    subprocess.run([GATEWAY, "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True)
    done = subprocess.run(
        [GATEWAY, "audit", "retention"], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: ledger retention drops monthly partitions, which only the PostgreSQL ledger has; "
        "a SQLite ledger is kept whole"
    ]
