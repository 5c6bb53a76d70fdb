"""The migrations build exactly the schema the code declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import EventDraft, LedgerWriter
from gateway.audit.tables import PARTITIONED_TABLES, ledger_metadata
from gateway.console.tables import console_metadata
from gateway.db import MIGRATIONS_DIR, create_engine, current_revision, is_sqlite, upgrade
from gateway.guard.tables import guard_metadata
from gateway.keys import SigningKeys, generate_key
from gateway.oauth.clients import clients
from gateway.oauth.revocations import revocation_metadata
from gateway.reviews.tables import reviews_metadata
from gateway.rights.tables import rights_metadata
from gateway.state import state_metadata
from resolvers import metadata
from resolvers.models import addresses, households, id_high_water, people
from tests.support.databases import postgres_database

EXPECTED_TABLES = {
    "addresses", "households", "people", "assessments", "objections", "clients",
    "audit_chains", "audit_events", "audit_disclosures", "audit_checkpoints", "audit_retention",
    "revoked_tokens", "replay_guard", "shared_counters", "shared_sets", "trusted_documents", "break_glass",
    "console_sessions", "alert_acknowledgements", "restrictions", "rights_requests", "agreement_versions",
    "notifications", "person_records", "contributions", "eligibility_intervals", "referrals", "batches",
    "batch_rows", "report_keys", "id_high_water",
}  # fmt: skip
EXPECTED_INDEXES = {"ix_people_household_id", "ix_people_name_dob", "ix_people_date_of_birth"}


def _target() -> MetaData:
    target = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(target)
    clients.to_metadata(target)
    more_metadata = (ledger_metadata, revocation_metadata, state_metadata, guard_metadata, console_metadata)
    for more in (*more_metadata, rights_metadata, reviews_metadata):
        for table in more.tables.values():
            table.to_metadata(target)
    return target


def _not_partitioned(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """PostgreSQL's partitioned ledger tables (and their partitions) are checked by
    test_the_ledger_is_partitioned_by_month: Alembic's comparison does not know partitions, and their
    keys must include the partition column."""
    table = getattr(obj, "table", obj) if type_ != "table" else obj
    table_name = name if type_ == "table" else getattr(table, "name", None)
    return not (table_name or "").startswith(PARTITIONED_TABLES)


def _differences(sync: Connection) -> list[object]:
    options: dict[str, object] = {"compare_type": True, "compare_server_default": True}
    if sync.dialect.name == "postgresql":
        options["include_object"] = _not_partitioned
    context = MigrationContext.configure(sync, opts=options)
    with warnings.catch_warnings():
        # SQLite cannot reflect the expression index on lower(family_name); it is checked by name below.
        warnings.filterwarnings("ignore", message=".*expression-based index")
        return list(compare_metadata(context, _target()))


def _head() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_the_target_holds_every_table() -> None:
    assert set(_target().tables) == EXPECTED_TABLES


async def test_the_migrated_database_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        differences = await conn.run_sync(_differences)
    assert differences == []


async def test_tables_and_indexes_exist_by_name(engine: AsyncEngine, database_url: str) -> None:
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        if is_sqlite(database_url):
            query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'people'"
        else:
            query = "SELECT indexname FROM pg_indexes WHERE tablename = 'people'"
        indexes = set((await conn.execute(text(query))).scalars())
        uniques = await conn.run_sync(
            lambda sync: {
                name: {u["name"] for u in inspect(sync).get_unique_constraints(name)}
                for name in ("addresses", "assessments", "contributions", "referrals", "batches")
            }
        )
    partitions = {t for t in tables if t.startswith(PARTITIONED_TABLES) and "_y" in t}
    assert tables - partitions == EXPECTED_TABLES | {"alembic_version"}
    assert indexes >= EXPECTED_INDEXES
    assert uniques == {
        "addresses": {"uq_addresses_uprn"},
        "assessments": {"uq_assessments_household_id"},
        "contributions": {"uq_contributions_client_id"},
        "referrals": {"uq_referrals_client_id"},
        "batches": {"uq_batches_client_id"},
    }


async def test_the_database_is_at_the_head_revision(engine: AsyncEngine) -> None:
    head = _head()
    assert head == "0014"
    assert await current_revision(engine) == head


@pytest.mark.parametrize("uprn", ["", "1234567890123"])
async def test_a_uprn_that_is_empty_or_longer_than_12_digits_is_refused(
    engine: AsyncEngine, database_url: str, uprn: str
) -> None:
    row = {"id": 999_999, "uprn": uprn, "line1": "1 Test Street", "town": "London", "postcode": "W2 1ZZ"}
    # The CHECK constraint refuses both on SQLite; PostgreSQL's varchar(12) refuses the long one first.
    long_on_postgres = bool(uprn) and not is_sqlite(database_url)
    expected, message = (
        (DBAPIError, "value too long") if long_on_postgres else (IntegrityError, "uprn_length")
    )
    async with engine.connect() as conn:
        trans = await conn.begin()
        with pytest.raises(expected, match=message):
            await conn.execute(insert(addresses).values(row))
        await trans.rollback()


async def test_a_duplicate_uprn_is_refused(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        trans = await conn.begin()
        existing = (await conn.execute(text("SELECT uprn FROM addresses WHERE uprn IS NOT NULL"))).scalar()
        assert existing is not None
        row = {
            "id": 999_998,
            "uprn": existing,
            "line1": "1 Test Street",
            "town": "London",
            "postcode": "W2 1ZZ",
        }
        with pytest.raises(
            IntegrityError, match=r"uq_addresses_uprn|UNIQUE constraint failed: addresses\.uprn"
        ):
            await conn.execute(insert(addresses).values(row))
        await trans.rollback()


async def test_ids_purged_before_the_high_water_mark_existed_are_never_given_again(
    database_url: str, tmp_path: Path
) -> None:
    """Migration 0014 starts each mark above every id held and every person the ledger names: a person
    purged before it (known now only to the ledger) keeps their id to themselves."""

    @asynccontextmanager
    async def empty() -> AsyncIterator[str]:
        if is_sqlite(database_url):
            yield f"sqlite+aiosqlite:///{tmp_path / 'before.db'}"
            return
        async with postgres_database() as made:
            yield made

    async with empty() as url:
        engine = create_engine(url)
        try:
            await upgrade(engine, "0013")
            async with engine.begin() as conn:
                await conn.execute(
                    insert(addresses).values(id=70, line1="1 Old Road", town="London", postcode="W2 1AA")
                )
                await conn.execute(insert(households).values(id=71, address_id=70))
                await conn.execute(
                    insert(people).values(id=72, household_id=71, given_name="Kept", family_name="Here",
                                          date_of_birth=date(1990, 1, 1), retention_until=date(2031, 1, 1))
                )  # fmt: skip
            writer = LedgerWriter(
                engine, signing=SigningKeys.from_keys([generate_key()]), writer="t", heads=False
            )
            try:  # someone purged long ago, whom the ledger still names
                await writer.record(
                    EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=1,
                               disclosures=((900, ("givenName",)),))
                )  # fmt: skip
            finally:
                await writer.close()
            await upgrade(engine)
            async with engine.connect() as conn:
                marks = dict(
                    (await conn.execute(select(id_high_water.c.name, id_high_water.c.last_id))).all()
                )
        finally:
            await engine.dispose()
    assert marks == {"people": 900, "households": 71, "addresses": 70}
