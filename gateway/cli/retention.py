"""`gateway retention run [--apply]`: purge the people past every retention schedule, unless a hold applies.

The schedules and holds are data (`policies/retention.yaml`, or GATEWAY_RETENTION_FILE). A run reads
every person with their records by class, decides each (`policies.retention.decide`) and prints the
counts per schedule and per hold, and the people no schedule explains (never purged). It is a dry run
unless `--apply`: then the people due are purged in batches, each batch one transaction that locks its
people, decides them again (a hold placed or a record reopened since the plan stops the purge) and deletes
them with whatever only they kept (`resolvers.retention.purge_people`). A batch is all or nothing, so a
run can be interrupted at any point and run again to finish; a second run finds nothing to purge.

Every run is written to the ledger first, under the security-audit agreement and without personal data:
a run the ledger cannot hold does not happen. The ledger, data subjects' requests and notifications keep
a purged person's id: a subject access request still lists who received their data. On PostgreSQL, run
it as the migrator role: the application role may not delete records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import click
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.bulk import RECEIVED_KEEP_DAYS
from gateway.cli.audit import record_command, who_option, why_option
from gateway.cli.support import explain, fail, load_settings, open_database, run
from gateway.config import council_today
from policies.retention import (
    RetentionDecision,
    RetentionFileError,
    RetentionPolicy,
    RetentionTally,
    add_years,
    decide,
    load_retention,
)
from resolvers.models import RECEIVED, batch_rows, batches, referrals
from resolvers.referrals import OPENED_CLASS
from resolvers.retention import PersonRecords, lock_people_records, purge_people, read_people_records

DEFAULT_BATCH: int = 500
_PAGE = 5_000  # people read at a time for the plan


@dataclass
class RetentionRun:
    """What a run decided and, with --apply, what it purged."""

    tally: RetentionTally
    due: list[tuple[int, RetentionDecision]] = field(default_factory=list)  # (person id, decision)
    households: int = 0  # purged: left with nobody
    addresses: int = 0  # purged: used by no household any more
    batches: int = 0  # committed
    # Partners' referrals never linked to a person (left for review), past the schedule of the record they
    # would have opened (resolvers.referrals.OPENED_CLASS), counted from when they were received.
    referrals_due: int = 0
    referrals_purged: int = 0
    # Uploads whose own request was never recorded (answered 503 and never sent again): their rows hold
    # what the partner sent, never processed; deleted after RECEIVED_KEEP_DAYS.
    uploads_due: int = 0
    uploads_purged: int = 0

    def as_json(self, *, today: date, applied: bool) -> dict[str, object]:
        return {
            "today": today.isoformat(),
            "applied": applied,
            **self.tally.as_json(),
            "households_purged": self.households,
            "addresses_purged": self.addresses,
            "batches": self.batches,
            "undecided_referrals_due": self.referrals_due,
            "undecided_referrals_purged": self.referrals_purged,
            "unconfirmed_uploads_due": self.uploads_due,
            "unconfirmed_uploads_purged": self.uploads_purged,
        }


def _unconfirmed_uploads(today: date) -> Any:
    cutoff = datetime.combine(today - timedelta(days=RECEIVED_KEEP_DAYS), time.min, tzinfo=UTC)
    return (batches.c.state == RECEIVED) & (batches.c.created_at < cutoff)


def _undecided_referrals(policy: RetentionPolicy, today: date) -> Any:
    """Referrals never linked to anyone, received before the schedule's term would let them go."""
    schedule = policy.schedules.get(OPENED_CLASS)
    if schedule is None:
        return None  # no schedule for such records: never purged
    received_before = add_years(today, -schedule.keep_years) + timedelta(days=1)
    return (referrals.c.person_id.is_(None)) & (
        referrals.c.recorded_at < datetime.combine(received_before, time.min, tzinfo=UTC)
    )


def _decide(person: PersonRecords, *, policy: RetentionPolicy, today: date) -> RetentionDecision:
    return decide(
        person.records,
        legal_hold=person.legal_hold,
        today=today,
        policy=policy,
        retention_until=person.retention_until,
    )


async def plan_run(engine: AsyncEngine, *, policy: RetentionPolicy, today: date) -> RetentionRun:
    """Decide every person, reading a page at a time; nothing is changed."""
    planned = RetentionRun(RetentionTally(policy))
    after = 0
    async with engine.connect() as conn:
        while page := await read_people_records(conn, after=after, limit=_PAGE):
            for person in page:
                decision = _decide(person, policy=policy, today=today)
                planned.tally.count(decision)
                if decision.is_due:
                    planned.due.append((person.person_id, decision))
            after = page[-1].person_id
    return planned


async def purge_batch(
    engine: AsyncEngine,
    batch: Sequence[tuple[int, RetentionDecision]],
    *,
    planned: RetentionRun,
    policy: RetentionPolicy,
    today: date,
) -> int:
    """Purge one batch of the people planned as due, in one transaction, and count it in `planned`
    once committed. Each is locked and decided again first: only those still due go. Returns how many."""
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # A writer from the first statement: nobody can place a hold between our read and our delete.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        now = {person.person_id: person for person in await lock_people_records(conn, [i for i, _ in batch])}
        going: list[tuple[int, RetentionDecision]] = []
        changed: list[tuple[RetentionDecision, RetentionDecision | None]] = []
        for person_id, was in batch:
            person = now.get(person_id)
            if person is None:
                changed.append((was, None))  # no longer on record: someone else removed them
                continue
            decision = _decide(person, policy=policy, today=today)
            if decision.is_due:
                going.append((person_id, decision))
            changed.append((was, decision))
        count = await purge_people(conn, [person_id for person_id, _ in going])
    # Committed: count what happened, as it happened.
    for was, now_decided in changed:
        if now_decided == was:
            continue
        planned.tally.uncount(was)
        if now_decided is None:
            planned.tally.gone += 1
        else:
            planned.tally.count(now_decided)
    for _, purged in going:
        assert purged.schedule is not None
        planned.tally.purged(purged.schedule)
    planned.households += count.households
    planned.addresses += count.addresses
    planned.batches += 1
    return count.people


async def apply_run(
    engine: AsyncEngine, planned: RetentionRun, *, policy: RetentionPolicy, today: date, batch_size: int
) -> None:
    for start in range(0, len(planned.due), batch_size):
        batch = planned.due[start : start + batch_size]
        await purge_batch(engine, batch, planned=planned, policy=policy, today=today)
    undecided = _undecided_referrals(policy, today)
    if undecided is not None:
        async with engine.begin() as conn:
            planned.referrals_purged = (await conn.execute(delete(referrals).where(undecided))).rowcount
    async with engine.begin() as conn:
        stale = select(batches.c.id).where(_unconfirmed_uploads(today))
        await conn.execute(delete(batch_rows).where(batch_rows.c.batch_id.in_(stale)))
        planned.uploads_purged = (
            await conn.execute(delete(batches).where(_unconfirmed_uploads(today)))
        ).rowcount


async def _count_undecided(
    engine: AsyncEngine, planned: RetentionRun, policy: RetentionPolicy, today: date
) -> None:
    undecided = _undecided_referrals(policy, today)
    if undecided is not None:
        async with engine.connect() as conn:
            found = await conn.execute(select(func.count()).select_from(referrals).where(undecided))
            planned.referrals_due = int(found.scalar_one())
    async with engine.connect() as conn:
        found = await conn.execute(
            select(func.count()).select_from(batches).where(_unconfirmed_uploads(today))
        )
        planned.uploads_due = int(found.scalar_one())


@click.group(help="Retention schedules (policies/retention.yaml): who is past them, and purging them.")
def retention() -> None:
    pass


@retention.command(
    "run",
    help="Decide every person under the retention schedules and holds and count them per schedule and "
    "hold. A dry run unless --apply: then purge the people due (never anyone under a hold), in batches "
    "of one transaction each; safe to interrupt and to run again. Every run is recorded in the ledger first.",
)
@click.option("--apply", "apply_", is_flag=True, help="Purge the people due (default: only count them).")
@click.option(
    "--batch-size", type=click.IntRange(1, 5_000), default=DEFAULT_BATCH, show_default=True,
    help="People purged per transaction.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def retention_run(
    apply_: bool, batch_size: int, as_json: bool, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()
    try:
        policy = load_retention(settings.retention_file)
    except RetentionFileError as error:
        fail(f"GATEWAY_RETENTION_FILE: {error}")
    today = council_today()

    async def ran() -> RetentionRun:
        async with open_database(settings) as engine:
            # The event first: a run the ledger cannot hold does not happen.
            operation = "retention run --apply" if apply_ else "retention run"
            await record_command(settings, engine, operation, acting_user, case_reference)
            planned = await plan_run(engine, policy=policy, today=today)
            await _count_undecided(engine, planned, policy, today)
            if not apply_:
                return planned
            try:
                await apply_run(engine, planned, policy=policy, today=today, batch_size=batch_size)
            except Exception as error:
                purged = planned.tally.total("purged")
                fail(
                    f"stopped after purging {_count(purged, 'person', 'people')} in "
                    f"{_count(planned.batches, 'batch', 'batches')}: {explain(error)}. "
                    "Nothing of the batch that failed was deleted; run again to finish"
                )
            # And what it did, in a second event: the counts, never who.
            await record_command(
                settings, engine, f"retention run --apply: purged {planned.tally.total('purged')}",
                acting_user, case_reference,
            )  # fmt: skip
            return planned

    done = run(ran)
    if as_json:
        click.echo(json.dumps(done.as_json(today=today, applied=apply_), indent=2))
    else:
        click.echo(_report(done, today=today, applied=apply_, source=str(settings.retention_file)))


def _report(done: RetentionRun, *, today: date, applied: bool, source: str) -> str:
    tally = done.tally.as_json()
    columns = ("people", "kept", "due", "held", "purged")
    width = max(len("schedule"), *(len(name) for name in tally["schedules"]))
    lines = [
        f"retention run on {today.isoformat()}: {tally['people']} people, schedules from {source}",
        f"{'schedule':<{width}}" + "".join(f"{column:>9}" for column in columns),
    ]
    for name, row in tally["schedules"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{row[column]:>9}" for column in columns))
    lines.append("held, by hold (a person under two holds counts under each):")
    lines += [f"  {hold:<{width}}{count:>9}" for hold, count in tally["holds"].items()]
    unclassified = tally["unclassified"]
    without = ", ".join(f"{name}: {n}" for name, n in unclassified["classes_without_schedule"].items())
    lines.append(
        f"unclassified (never purged; no record a schedule explains): {unclassified['people']}"
        + (f" (records of a class with no schedule: {without})" if without else "")
    )
    if done.referrals_due:
        lines.append(
            f"referrals never linked to anyone, past the {OPENED_CLASS} schedule: {done.referrals_due}"
            + (f" (deleted {done.referrals_purged})" if applied else "")
        )
    if done.uploads_due:
        lines.append(
            f"uploads never confirmed, older than {RECEIVED_KEEP_DAYS} days: {done.uploads_due}"
            + (f" (deleted {done.uploads_purged})" if applied else "")
        )
    if tally["gone_since_plan"]:
        lines.append(f"gone since the plan (removed by someone else): {tally['gone_since_plan']}")
    if not applied:
        lines.append(
            f"DRY RUN: nothing deleted; {_count(tally['due'], 'person', 'people')} due. "
            "Run with --apply to purge them."
        )
    elif tally["purged"]:
        lines.append(
            f"purged {_count(tally['purged'], 'person', 'people')}, and "
            f"{_count(done.households, 'household', 'households')} and "
            f"{_count(done.addresses, 'address', 'addresses')} left with nobody, "
            f"in {_count(done.batches, 'batch', 'batches')}"
        )
    else:
        lines.append("purged nothing: nobody was due")
    return "\n".join(lines)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
