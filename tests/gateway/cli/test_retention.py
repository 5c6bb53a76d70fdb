"""`gateway retention run`: a dry run changes nothing and counts what --apply then purges; nobody under
a hold, unclassified or with an open record is purged; a run is in the ledger first; a second run purges
nothing; a hold placed before a batch is honoured; an interrupted run leaves no half-deleted person or
household and a re-run finishes. On SQLite and PostgreSQL, each test with a database of its own (a purge
must never touch the session's shared population)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import EventDraft, LedgerWriter, render_text, subject_access_report
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.cli.retention import _report, apply_run, plan_run, purge_batch
from gateway.config import council_today
from gateway.keys import SigningKeys, generate_key, write_key_file
from gateway.rights import notifications, rights_requests
from policies import load_agreements
from policies.retention import LEGAL_HOLD, RetentionPolicy, add_years, load_retention
from resolvers import seed_population
from resolvers.models import (
    addresses,
    assessments,
    batch_rows,
    batches,
    households,
    objections,
    people,
    person_records,
    referrals,
)
from tests.gateway.cli.conftest import run_gateway
from tests.support.processes import gateway_env
from tests.support.retention import Households, count_rows, exists, fresh_engine

OPERATOR = "records.manager@council.test.invalid"
KINDS = ["sqlite", "postgresql"]


@dataclass
class Cli:
    url: str
    engine: AsyncEngine
    env: dict[str, str]
    cwd: Path
    signing: SigningKeys
    today: date

    def run(self, *args: str, **more: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **more}
        return run_gateway(env, self.cwd, "retention", "run", *args, "--acting-user", OPERATOR)


@pytest.fixture(params=KINDS)
async def cli(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cli]:
    async with fresh_engine(request.param, tmp_path) as (url, engine):
        key = generate_key()
        write_key_file(tmp_path / "signing.jwk.json", [key])
        # The command judges dates in the council's day, as here.
        yield Cli(
            url, engine, gateway_env(tmp_path, url), tmp_path, SigningKeys.from_keys([key]), council_today()
        )


def _years_ago(today: date, years: int, days: int = 0) -> date:
    return today.replace(year=today.year - years, day=min(today.day, 28)) - timedelta(days=days)


@dataclass
class People:
    due_alone: int  # alone in an assessed household, with an objection, a restriction, a request, disclosures
    due_shared: int
    kept_shared: int  # in the same household as due_shared
    held_legal: int
    held_goddard: int
    unclassified: int
    still_open: int
    kept: int
    kept_by_hand: int  # due by the schedules, but their own retention date (the views') is not yet past


async def _people(engine: AsyncEngine, signing: SigningKeys, today: date) -> People:
    long_ago = (
        "family-hub",
        _years_ago(today, 6, days=40),
    )  # six years and some weeks since the last contact
    async with engine.begin() as conn:
        make = Households(conn)
        alone, _ = await make.household()
        shared, _ = await make.household()
        others, _ = await make.household(assessed=False)
        found = People(
            due_alone=await make.person(alone, long_ago, today=today, objection=True, restriction=True),
            due_shared=await make.person(shared, long_ago, today=today),
            kept_shared=await make.person(shared, ("family-hub", _years_ago(today, 1)), today=today),
            held_legal=await make.person(others, long_ago, today=today, legal_hold=True),
            # A youth justice record (the 25th birthday long past) is a child's record: Goddard holds it.
            held_goddard=await make.person(
                others,
                long_ago,
                ("youth-justice", _years_ago(today, 30)),
                today=today,
                born=_years_ago(today, 30),
            ),
            unclassified=await make.person(others, today=today),
            still_open=await make.person(
                others, ("family-hub", _years_ago(today, 10)), ("supporting-families", None), today=today
            ),
            kept=await make.person(others, ("family-hub", _years_ago(today, 2)), today=today),
            kept_by_hand=await make.person(
                others, long_ago, today=today, retention_until=today + timedelta(days=30)
            ),
        )
        await conn.execute(
            insert(rights_requests).values(
                id="a" * 32, person_id=found.due_alone, kind="access", received_on=today,
                requested_by="subject", legal_basis="UK GDPR Art 15", recorded_at=datetime.now(UTC),
                recorded_by=OPERATOR, status="open",
            )
        )  # fmt: skip
        await conn.execute(
            insert(notifications).values(
                id="b" * 32, client_id="police-client", agreement_id="police-prevention",
                person_id=found.due_alone, kind="rectification", fields="givenName", request_id="a" * 32,
                created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    police = load_agreements()["police-prevention"]
    writer = LedgerWriter(engine, signing=signing, writer="test", heads=False)
    try:
        await writer.record(
            EventDraft(
                endpoint="graphql", outcome="allowed", http_status=200, latency_us=1,
                client_id="police-client", agreement_id=police.id, agreement_version=police.version,
                purpose=police.purpose, lawful_basis=police.lawful_basis, operation_name="People",
                fields_disclosed=("givenName",),
                disclosures=((found.due_alone, ("givenName", "familyName")),),
            )
        )  # fmt: skip
    finally:
        await writer.close()
    return found


async def test_a_dry_run_counts_what_apply_then_purges_and_a_second_run_purges_nothing(cli: Cli) -> None:
    async with cli.engine.begin() as conn:
        await seed_population(conn, people_count=150, seed=11, today=cli.today)
    who = await _people(cli.engine, cli.signing, cli.today)
    before = await count_rows(cli.engine)

    dry = cli.run("--json", "--case-reference", "RET-2026-1")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert await count_rows(cli.engine) == before  # nothing deleted
    assert (planned["applied"], planned["purged"], planned["today"]) == (False, 0, cli.today.isoformat())
    assert (
        planned["due"] >= 2 and planned["holds"][LEGAL_HOLD] >= 1 and planned["holds"]["goddard-inquiry"] >= 1
    )
    assert planned["unclassified"]["people"] >= 1
    assert planned["people"] == before["people"]

    applied = cli.run("--apply", "--json", "--batch-size", "3")
    assert applied.returncode == 0, applied.stderr
    done = json.loads(applied.stdout)
    # What the dry run counted per schedule is what was purged: due people, and only them.
    assert {name: row["due"] for name, row in planned["schedules"].items()} == {
        name: row["purged"] for name, row in done["schedules"].items()
    }
    assert done["purged"] == planned["due"] == before["people"] - (await count_rows(cli.engine))["people"]
    assert done["holds"] == planned["holds"] and done["unclassified"] == planned["unclassified"]
    assert done["batches"] == -(-planned["due"] // 3)

    for person in (who.due_alone, who.due_shared):
        assert not await exists(cli.engine, people, id=person)
        assert not await exists(cli.engine, person_records, person_id=person)
    assert not await exists(cli.engine, objections, person_id=who.due_alone)
    for person in (
        who.kept_shared,
        who.held_legal,
        who.held_goddard,
        who.unclassified,
        who.still_open,
        who.kept,
        who.kept_by_hand,
    ):
        assert await exists(cli.engine, people, id=person), person
    after = await count_rows(cli.engine)
    assert after["objections"] < before["objections"] and after["restrictions"] == 0
    assert before["households"] - after["households"] == done["households_purged"] >= 1
    assert before["addresses"] - after["addresses"] == done["addresses_purged"] >= 1
    assert after["assessments"] < before["assessments"]
    # What outlives the record: the person's requests, the notices to recipients, the ledger's register.
    for table in (rights_requests, notifications, audit_disclosures):
        assert await exists(cli.engine, table, person_id=who.due_alone), table.name
    report = await subject_access_report(cli.engine, who.due_alone, agreements=load_agreements())
    assert report.held is None
    assert [(d["agreement"], d["fields"]) for d in report.disclosures] == [
        ("police-prevention", ["givenName", "familyName"])
    ]

    # A subject access report names each record kept, its schedule and until when.
    held = await subject_access_report(
        cli.engine, who.held_goddard, agreements=load_agreements(), retention=load_retention()
    )
    assert held.held is not None
    assert held.held["records"] == [
        {
            "record_class": "family-hub",
            "counted_from": _years_ago(cli.today, 6, days=40).isoformat(),
            "schedule": "6 years from the last contact with the family",
            "kept_until": add_years(_years_ago(cli.today, 6, days=40), 6).isoformat(),
        },
        {
            "record_class": "youth-justice",
            "counted_from": _years_ago(cli.today, 30).isoformat(),
            "schedule": "25 years from the young person's date of birth",
            "kept_until": _years_ago(cli.today, 5).isoformat(),
        },
    ]
    assert "Record:          youth-justice, dated " in render_text(held)

    again = cli.run("--apply")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "purged nothing: nobody was due"
    assert await count_rows(cli.engine) == after

    async with cli.engine.connect() as conn:
        events = (
            await conn.execute(
                select(audit_events.c.id, audit_events.c.operation_name, audit_events.c.acting_user,
                       audit_events.c.case_reference, audit_events.c.agreement_id)
                .where(audit_events.c.endpoint == "cli")
                .order_by(audit_events.c.occurred_at)
            )
        ).all()  # fmt: skip
        disclosed = (
            await conn.execute(
                select(audit_disclosures.c.person_id).where(
                    audit_disclosures.c.event_id.in_([e.id for e in events])
                )
            )
        ).all()
    assert [(e.operation_name, e.acting_user, e.case_reference, e.agreement_id) for e in events] == [
        ("retention run", OPERATOR, "RET-2026-1", "security-audit"),
        ("retention run --apply", OPERATOR, None, "security-audit"),
        (f"retention run --apply: purged {done['purged']}", OPERATOR, None, "security-audit"),
        ("retention run --apply", OPERATOR, None, "security-audit"),
        ("retention run --apply: purged 0", OPERATOR, None, "security-audit"),
    ]
    assert disclosed == []  # a run names nobody in the ledger


@pytest.mark.parametrize("kind", KINDS)
async def test_a_hold_placed_or_a_record_reopened_after_the_plan_stops_that_purge(
    kind: str, tmp_path: Path
) -> None:
    policy, today = load_retention(), date(2026, 11, 22)
    long_ago = ("family-hub", date(2019, 6, 1))
    async with fresh_engine(kind, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            make = Households(conn)
            home, _ = await make.household()
            due = [await make.person(home, long_ago, today=today) for _ in range(4)]
        planned = await plan_run(engine, policy=policy, today=today)
        assert [person_id for person_id, _ in planned.due] == due
        assert "DRY RUN: nothing deleted; 4 people due" in _report(
            planned, today=today, applied=False, source="x"
        )
        async with engine.begin() as conn:
            await conn.execute(update(people).where(people.c.id == due[1]).values(legal_hold=True))
            await conn.execute(
                update(person_records).where(person_records.c.person_id == due[2]).values(counted_from=None)
            )
            await conn.execute(person_records.delete().where(person_records.c.person_id == due[3]))
        await apply_run(engine, planned, policy=policy, today=today, batch_size=2)
        assert [await exists(engine, people, id=person_id) for person_id in due] == [False, True, True, True]
        counted = planned.tally.as_json()
        assert counted["schedules"]["family-hub"] == {
            "people": 3,
            "kept": 1,
            "due": 1,
            "held": 1,
            "purged": 1,
        }
        assert (counted["holds"][LEGAL_HOLD], counted["unclassified"]["people"]) == (1, 1)
        assert await exists(engine, households, id=home)  # the others still live there


@pytest.mark.parametrize("kind", KINDS)
async def test_a_hold_placed_while_a_batch_waits_for_its_lock_is_honoured(kind: str, tmp_path: Path) -> None:
    policy, today = load_retention(), date(2026, 11, 22)
    async with fresh_engine(kind, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            make = Households(conn)
            home, _ = await make.household()
            person = await make.person(home, ("family-hub", date(2019, 6, 1)), today=today)
        planned = await plan_run(engine, policy=policy, today=today)
        async with engine.connect() as holder:
            # Another session places a hold and has not committed yet: the batch must wait for it.
            await holder.execute(update(people).where(people.c.id == person).values(legal_hold=True))
            purge = asyncio.create_task(
                purge_batch(engine, planned.due, planned=planned, policy=policy, today=today)
            )
            await asyncio.sleep(0.5)
            assert not purge.done()
            await holder.commit()
        assert await purge == 0
        assert await exists(engine, people, id=person)
        assert planned.tally.as_json()["holds"][LEGAL_HOLD] == 1


STOP = {
    "sqlite": [
        "CREATE TRIGGER stop_purge BEFORE DELETE ON households WHEN old.id = {household} "
        "BEGIN SELECT RAISE(ABORT, 'the power went off'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION stop_purge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF OLD.id = {household} THEN RAISE EXCEPTION 'the power went off'; END IF; RETURN OLD; END $$",
        "CREATE TRIGGER stop_purge BEFORE DELETE ON households FOR EACH ROW EXECUTE FUNCTION stop_purge()",
    ],
}
RESUME = {"sqlite": ["DROP TRIGGER stop_purge"], "postgresql": ["DROP FUNCTION stop_purge() CASCADE"]}


async def test_an_interrupted_apply_leaves_no_half_deleted_person_or_household_and_a_rerun_finishes(
    cli: Cli,
) -> None:
    kind = "sqlite" if cli.url.startswith("sqlite") else "postgresql"
    long_ago = ("family-hub", _years_ago(cli.today, 7))
    async with cli.engine.begin() as conn:
        make = Households(conn)
        homes = [(await make.household()) for _ in range(3)]
        due = [await make.person(home, long_ago, today=cli.today, objection=True) for home, _ in homes]
        for statement in STOP[kind]:
            # The second household cannot be deleted: its batch fails after its person was deleted.
            await conn.execute(text(statement.format(household=homes[1][0])))
    before = await count_rows(cli.engine)

    stopped = cli.run("--apply", "--batch-size", "1")
    assert stopped.returncode == 1
    assert stopped.stdout == ""
    assert stopped.stderr.startswith("error: stopped after purging 1 person in 1 batch: the database refused")
    assert stopped.stderr.endswith("Nothing of the batch that failed was deleted; run again to finish\n")
    assert stopped.stderr.count("\n") == 1 and "Traceback" not in stopped.stderr
    assert not await exists(cli.engine, people, id=due[0])
    for person_id, (household, address) in zip(due[1:], homes[1:], strict=True):
        # Untouched, whole: the person, their records and objection, their household, assessment, address.
        assert await exists(cli.engine, people, id=person_id)
        assert await exists(cli.engine, person_records, person_id=person_id)
        assert await exists(cli.engine, objections, person_id=person_id)
        assert await exists(cli.engine, households, id=household)
        assert await exists(cli.engine, assessments, household_id=household)
        assert await exists(cli.engine, addresses, id=address)
    after = await count_rows(cli.engine)
    assert {name: before[name] - after[name] for name in before} == {
        "addresses": 1, "households": 1, "people": 1, "assessments": 1, "objections": 1, "restrictions": 0,
        "person_records": 1,
    }  # fmt: skip

    async with cli.engine.begin() as conn:
        for statement in RESUME[kind]:
            await conn.execute(text(statement))
    finished = cli.run("--apply")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines()[-1].startswith("purged 2 people, and 2 households and 2 addresses")
    assert (await count_rows(cli.engine))["people"] == 0


async def test_no_change_without_its_ledger_event(tmp_path: Path) -> None:
    async with fresh_engine("sqlite", tmp_path) as (url, engine):
        async with engine.begin() as conn:
            make = Households(conn)
            home, _ = await make.household()
            await make.person(home, ("family-hub", date(2015, 1, 1)), today=council_today())
        before = await count_rows(engine)
        env = gateway_env(tmp_path, url, GATEWAY_SIGNING_KEY_FILE=str(tmp_path / "no-such-key.json"))
        refused = run_gateway(env, tmp_path, "retention", "run", "--apply")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
        assert await count_rows(engine) == before


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("GATEWAY_RETENTION_FILE", "bad",
         "error: GATEWAY_RETENTION_FILE: {bad}:5: schedules.family-hub.keep_years: expected a whole number"),
        ("GATEWAY_RETENTION_FILE", "missing",
         "error: GATEWAY_RETENTION_FILE: {missing}: (file): cannot be read (No such file or directory)\n"),
        ("GATEWAY_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
         "error: the database cannot be reached or cannot serve now"),
        ("GATEWAY_DATABASE_URL", "sqlite", "error: the database refused a statement"),
    ],
)  # fmt: skip
def test_a_bad_setting_or_unusable_database_is_one_error_line(
    tmp_path: Path, setting: str, value: str, message: str
) -> None:
    bad, missing, garbage = (
        tmp_path / "retention.yaml",
        tmp_path / "missing.yaml",
        tmp_path / "not-a-database",
    )
    bad.write_text(
        "schedules:\n  family-hub:\n    notice: six years\n"
        "    counted_from: last contact\n    keep_years: six\n"
    )
    garbage.write_bytes(b"this is not a database file, whatever its name says" * 100)
    value = {"bad": str(bad), "missing": str(missing), "sqlite": f"sqlite+aiosqlite:///{garbage}"}.get(
        value, value
    )
    env = gateway_env(tmp_path, f"sqlite+aiosqlite:///{garbage}", **{setting: value})
    done = run_gateway(env, tmp_path, "retention", "run", "--apply")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(message.format(bad=bad, missing=missing))
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_policy_the_command_reads_is_the_shipped_one_by_default(tmp_path: Path) -> None:
    from gateway.config import Settings

    assert load_retention(Settings().retention_file) == load_retention()
    assert isinstance(load_retention(), RetentionPolicy)


async def test_referrals_never_linked_and_uploads_never_confirmed_are_deleted_in_time(
    cli: Cli,
) -> None:
    """A referral left in review holds a child's name, birthday and address: kept as long as the Family Hub
    record it would have opened (six years from its receipt), then deleted by the run like a record. An
    upload never confirmed (its own request answered 503, never sent again) goes after a week."""
    async with cli.engine.begin() as conn:
        await seed_population(conn, people_count=20, seed=11, today=cli.today)
        someone = (await conn.execute(select(people.c.id).limit(1))).scalar_one()
        received = {
            "due": datetime.combine(add_years(cli.today, -6), datetime.min.time(), tzinfo=UTC),
            "kept": datetime.combine(
                add_years(cli.today, -6) + timedelta(days=1), datetime.min.time(), tzinfo=UTC
            ),
            "linked": datetime.combine(add_years(cli.today, -10), datetime.min.time(), tzinfo=UTC),
        }
        for name, at in received.items():
            await conn.execute(
                insert(referrals).values(
                    id=name.ljust(32, "0"), kind="two_year_old_offer", given_name="Ada",
                    family_name="Oldref", date_of_birth=date(2020, 1, 1), address_line1="1 Old Road",
                    town="London", postcode="W2 1AA",
                    client_id="dwp", agreement_id="dwp-worklessness", event_id="e" * 32, recorded_at=at,
                    state="linked" if name == "linked" else "review",
                    person_id=someone if name == "linked" else None, idempotency_key=f"old-{name}-key",
                    fingerprint="f" * 64,
                )
            )  # fmt: skip
        # Uploads whose own request was never recorded: one past the week, one not.
        for name, days in (("stale", 8), ("fresh", 6)):
            await conn.execute(
                insert(batches).values(
                    id=name.ljust(32, "0"), client_id="dwp", agreement_id="dwp-worklessness", format="ndjson",
                    content_sha256="c" * 64, idempotency_key=f"upload-{name}", row_count=1, processed=0,
                    accepted=0, rejected=0, state="received", event_id="d" * 31 + name[0],
                    created_at=datetime.now(UTC) - timedelta(days=days), upload_event_id="u" * 31 + name[0],
                )
            )  # fmt: skip
            await conn.execute(insert(batch_rows).values(batch_id=name.ljust(32, "0"), row_no=1, body="{}"))
    dry = cli.run("--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert (planned["undecided_referrals_due"], planned["undecided_referrals_purged"]) == (1, 0)
    assert (planned["unconfirmed_uploads_due"], planned["unconfirmed_uploads_purged"]) == (1, 0)
    text_run = cli.run()
    assert "referrals never linked to anyone, past the family-hub schedule: 1\n" in text_run.stdout
    applied = cli.run("--apply", "--json")
    assert json.loads(applied.stdout)["undecided_referrals_purged"] == 1
    assert json.loads(applied.stdout)["unconfirmed_uploads_purged"] == 1
    async with cli.engine.connect() as conn:
        left = sorted((await conn.execute(select(referrals.c.id))).scalars())
        uploads = sorted((await conn.execute(select(batches.c.id))).scalars())
        rows = sorted((await conn.execute(select(batch_rows.c.batch_id))).scalars())
    assert [i.rstrip("0") for i in left] == ["kept", "linked"]
    assert [i.rstrip("0") for i in uploads] == [i.rstrip("0") for i in rows] == ["fresh"]
