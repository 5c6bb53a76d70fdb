"""The ledger at scale (PostgreSQL): events and disclosures partitioned by month, a ledger written
before the partitioning carried over intact, and retention that drops whole months, leaves a signed
record, and keeps verification both passing and finding anything else that goes missing.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chains import sign_checkpoint
from gateway.audit.errors import AuditError
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
from gateway.audit.writer import DISCLOSURE_COLUMNS, _copy_or_insert
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
    recorded: list[str] | None = None,
    partitioned: bool = True,
) -> list[dict[str, object]]:
    """A chain of events at the given times (each disclosing one person), checkpointed at its end.
    `recorded`: when the writer committed each (by default its time); `partitioned=False`: a ledger
    from before migration 0007, which had no such column."""
    rows, prev = [], GENESIS
    recorded = recorded or times
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
            disclosure = {"event_id": row["id"], "person_id": 1000 + seq, "fields": "givenName"}
            if partitioned:
                row["recorded_at"] = disclosure["recorded_at"] = recorded[seq - 1]
            rows.append(row)
            await conn.execute(insert(audit_events).values(**row))
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
    # The third event's time is before the second's (a summary of refusals is written a minute after
    # its first refusal): its recorded_at becomes the second's, so the chain stays in order.
    times = [
        "2025-06-30T23:59:59.999999Z", "2025-07-01T00:00:00.000000Z", "2025-06-30T23:59:30.000000Z",
        "2026-11-02T08:00:00.000000Z",
    ]  # fmt: skip
    await _write_chain(ledger_engine, keys, _chain_id(1), times, partitioned=False)
    await upgrade(ledger_engine)
    reports = await verify_ledger(ledger_engine, keys.audit_verification)
    assert [(r.ok, r.events) for r in reports] == [(True, 4)], [r.describe() for r in reports]
    async with ledger_engine.connect() as conn:
        placed = (
            await conn.execute(
                text(
                    "SELECT e.seq, e.tableoid::regclass::text, d.tableoid::regclass::text, e.recorded_at "
                    "FROM audit_events e JOIN audit_disclosures d ON d.event_id = e.id ORDER BY e.seq"
                )
            )
        ).all()
    assert placed == [
        (1, "audit_events_y2025m06", "audit_disclosures_y2025m06", times[0]),
        (2, "audit_events_y2025m07", "audit_disclosures_y2025m07", times[1]),
        (3, "audit_events_y2025m07", "audit_disclosures_y2025m07", times[1]),
        (4, "audit_events_y2026m11", "audit_disclosures_y2026m11", times[3]),
    ]
    # So retention drops a prefix of the chain: its first event only.
    dropped = await apply_retention(ledger_engine, keys, months=16, today=TODAY)
    assert (dropped.months, dropped.events) == (("2025-06",), 1)
    [report] = await verify_ledger(ledger_engine, keys.audit_verification)
    assert (report.ok, report.dropped, report.events) == (True, 1, 3), report.describe()


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


async def _forge(engine: AsyncEngine, chain: str, seq: int, person: int, recorded: str) -> None:
    """An event at `seq` of `chain`, with a disclosure, inserted as a role that may only INSERT could."""
    draft = EventDraft(
        endpoint="graphql", outcome="allowed", http_status=200, latency_us=1,
        agreement_id="police-prevention", fields_disclosed=("givenName",),
        disclosures=((person, ("givenName",)),),
    )  # fmt: skip
    row = event_row(draft, chain_id=chain, seq=seq, prev_hash=GENESIS)
    row["recorded_at"] = recorded
    async with engine.begin() as conn:
        await conn.execute(insert(audit_events).values(**row))
        await conn.execute(
            insert(audit_disclosures).values(
                event_id=row["id"], person_id=person, fields="givenName", recorded_at=recorded
            )
        )


@pytest.mark.parametrize(
    ("seq", "problem"),
    [
        (0, "a second event"),  # below the first position: the database refuses it first
        (2, "a second event at position 2, which the chain already has (added later)"),
        (4, "a second event at position 4, which the chain already has (added later)"),
    ],
)
async def test_an_event_added_at_a_position_the_chain_has_fails_verification_wherever_it_falls(
    ledger_engine: AsyncEngine, keys: SigningKeys, monkeypatch: pytest.MonkeyPatch, seq: int, problem: str
) -> None:
    """Read in batches of two, positions 2 and 4 end a batch: a copy in the next month (the keys hold
    within a month: a copy in the same month is refused by the database) must still be read, and fail."""
    import gateway.audit.verification as verification

    monkeypatch.setattr(verification, "_BATCH", 2)
    await upgrade(ledger_engine)
    times = [f"2026-11-29T12:00:0{n}.000000Z" for n in range(5)]
    await _write_chain(ledger_engine, keys, _chain_id(4), times, final=True)
    if seq == 0:
        with pytest.raises(Exception, match="ck_audit_events_seq_positive"):
            await _forge(ledger_engine, _chain_id(4), 0, 42, "2026-11-29T13:00:00.000000Z")
        return
    with pytest.raises(Exception, match="duplicate key"):
        await _forge(ledger_engine, _chain_id(4), seq, 42, "2026-11-29T13:00:00.000000Z")
    await _forge(ledger_engine, _chain_id(4), seq, 42, _next_month())
    [report] = await verify_ledger(ledger_engine, keys.audit_verification)
    # Read in (seq, id) order, the copy comes first or second: it does not follow, or it repeats.
    assert (report.ok, report.seq) == (False, seq)
    assert report.problem in (problem, "does not follow from the event before it (altered or deleted)")


def _next_month() -> str:
    """A time in next month (its partition exists: each writer makes three months ahead)."""
    now = date.today()
    index = now.year * 12 + now.month
    return f"{index // 12:04d}-{index % 12 + 1:02d}-02T10:00:00.000000Z"


async def test_an_event_id_used_again_in_another_month_fails_verification(
    ledger_engine: AsyncEngine, keys: SigningKeys
) -> None:
    await upgrade(ledger_engine)
    [first] = await _write_chain(
        ledger_engine, keys, _chain_id(10), ["2026-11-29T12:00:00.000000Z"], final=True
    )
    await _write_chain(ledger_engine, keys, _chain_id(11), ["2026-11-29T12:00:01.000000Z"], final=True)
    async with ledger_engine.begin() as conn:
        copy = {**first, "chain_id": _chain_id(11), "seq": 2, "recorded_at": _next_month()}
        await conn.execute(insert(audit_events).values(**copy))
    reports = await verify_ledger(ledger_engine, keys.audit_verification)
    assert reports[-1].describe() == "the events: FAILED: 1 event ids appear more than once (added by hand)"


async def test_a_disclosure_row_that_no_event_holds_fails_verification(
    ledger_engine: AsyncEngine, keys: SigningKeys
) -> None:
    await upgrade(ledger_engine)
    await _write_chain(ledger_engine, keys, _chain_id(5), ["2026-11-29T12:00:00.000000Z"], final=True)
    async with ledger_engine.begin() as conn:
        await conn.execute(
            insert(audit_disclosures).values(
                event_id="f" * 32, person_id=42, fields="givenName", recorded_at="2026-11-29T12:00:01.000000Z"
            )
        )
    reports = await verify_ledger(ledger_engine, keys.audit_verification)
    assert [r.ok for r in reports] == [True, False]
    assert reports[1].describe() == ("the disclosure register: FAILED: 1 rows name no event (added by hand)")


async def test_a_chain_dropped_whole_says_so(ledger_engine: AsyncEngine, keys: SigningKeys) -> None:
    await upgrade(ledger_engine)
    await _add_month(ledger_engine, "2018-01")
    await _write_chain(
        ledger_engine, keys, _chain_id(6), ["2018-01-10T09:00:00.000000Z", "2018-01-10T09:00:01.000000Z"],
        final=True,
    )  # fmt: skip
    await apply_retention(ledger_engine, keys, months=84, today=TODAY)
    [report] = await verify_ledger(ledger_engine, keys.audit_verification)
    assert report.ok
    assert report.describe().startswith(
        f"chain {_chain_id(6)}: all 2 events dropped by retention (as signed), 1 checkpoints, closed"
    )


async def test_retention_lets_go_while_a_reader_holds_the_ledger_and_writes_go_on(
    ledger_engine: AsyncEngine, keys: SigningKeys
) -> None:
    """Dropping a partition locks the parent exclusively: a run that waited for a long reader would
    hold every ledger write behind it. It waits a second at most, gives up, and tries again."""
    await upgrade(ledger_engine)
    await _add_month(ledger_engine, "2018-01")
    await _write_chain(ledger_engine, keys, _chain_id(7), ["2018-01-10T09:00:00.000000Z"], final=True)
    reader = await ledger_engine.connect()
    try:
        await reader.begin()
        await reader.execute(text("SELECT count(*) FROM audit_events"))  # holds ACCESS SHARE until the end
        run = asyncio.create_task(
            apply_retention(ledger_engine, keys, months=84, today=TODAY, attempts=2, backoff_seconds=0.1)
        )
        await asyncio.sleep(0.3)
        began = time.monotonic()
        write = _write_chain(ledger_engine, keys, _chain_id(8), ["2026-11-29T12:00:00.000000Z"])
        await asyncio.wait_for(write, 5)
        assert time.monotonic() - began < 2.5  # behind the run's lock for a second at most
        with pytest.raises(AuditError, match="the ledger stayed busy"):
            await run
    finally:
        await reader.close()
    assert "audit_events_y2018m01" in await _partitions(ledger_engine, "audit_events")  # nothing dropped
    done = await apply_retention(ledger_engine, keys, months=84, today=TODAY)
    assert done.months == ("2018-01",)


async def test_the_disclosures_copy_refuses_to_run_outside_its_batchs_transaction(
    ledger_engine: AsyncEngine,
) -> None:
    """COPY on the driver outside a transaction would commit on its own, before its event: refused."""
    await upgrade(ledger_engine)
    row = ("e" * 32, 1, "ref", "2026-11-30T00:00:00.000000Z")
    async with ledger_engine.connect() as conn:
        with pytest.raises(RuntimeError, match="inside the batch's transaction"):
            await _copy_or_insert(conn, audit_disclosures, DISCLOSURE_COLUMNS, [row])
    async with ledger_engine.connect() as conn:
        assert (await conn.execute(select(audit_disclosures.c.person_id))).all() == []
