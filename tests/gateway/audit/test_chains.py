"""Chains whose writers died: sealed with a signed `abandoned` checkpoint at start-up or by hand, so
that `--strict` passes and the verifier still says where the writer stopped; a live writer's chain
is never sealed. Writers that die are real processes that exit without closing. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, text, update

from gateway.audit import (
    ChainClosedError,
    ChainStillWritingError,
    EventDraft,
    LedgerWriter,
    UnknownChainError,
    Witness,
    read_witness,
    seal_abandoned,
    seal_orphans,
    verify_ledger,
    verify_witness,
)
from gateway.audit.tables import audit_chains, audit_checkpoints
from gateway.audit.witness import FileWitness
from gateway.cli import main
from gateway.db import create_engine
from gateway.keys import SigningKeys, write_key_file
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.databases import postgres_admin_url
from tests.support.ledger import Fresh, drop_append_only, fresh_database

LATER = timedelta(minutes=10)  # long enough for an unsigned tail to fail --strict

DYING_WRITER = """
import asyncio, os, sys
from pathlib import Path
from gateway.audit import EventDraft, LedgerWriter
from gateway.db import create_engine
from gateway.keys import load_key_file

async def main() -> None:
    writer = LedgerWriter(create_engine(sys.argv[1]), signing=load_key_file(Path(sys.argv[2])))
    for n in range(3):
        await writer.record(EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=n))
    print(writer.chain_id, flush=True)
    os._exit(0)  # gone, without closing its chain: as after kill -9

asyncio.run(main())
"""


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY, people=20) as made:
        yield made


@pytest.fixture
def key_file(signing: SigningKeys, tmp_path: Path) -> Path:
    path = tmp_path / "signing.jwk.json"
    write_key_file(path, [signing.active])
    return path


async def _dead_writer(fresh: Fresh, key_file: Path) -> str:
    """A real process that writes three events and dies with its chain open; its chain id."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", DYING_WRITER, fresh.url, str(key_file)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _draft() -> EventDraft:
    return EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=1)


async def test_a_dead_writers_chain_is_sealed_and_strict_passes_again(
    fresh: Fresh, key_file: Path, signing: SigningKeys, tmp_path: Path
) -> None:
    dead = await _dead_writer(fresh, key_file)
    moment = datetime.now(UTC) + LATER
    [before] = await verify_ledger(
        fresh.engine, signing.verification, strict_age=timedelta(minutes=5), now=moment
    )
    assert not before.ok and "were never signed (the writer died, or they were forged)" in (
        before.problem or ""
    )

    witness = Witness(FileWitness(tmp_path / "witness"), signing)
    sealed = await seal_orphans(fresh.engine, signing=signing, witness=witness, sealer="the test")
    assert [(s.chain_id, s.seq) for s in sealed] == [(dead, 3)]
    [after] = await verify_ledger(
        fresh.engine, signing.verification, strict_age=timedelta(minutes=5), now=moment
    )
    assert after.ok and after.closed and after.events == 3 and after.unsigned_events == 0
    assert after.abandoned is not None and "died; sealed by the test" in after.abandoned
    assert after.describe().startswith(
        f"chain {dead}: 3 events, 1 checkpoints, closed after its writer stopped at event 3"
    )
    records, _ = read_witness([tmp_path / "witness"])
    checked = await verify_witness(fresh.engine, signing.verification, [tmp_path / "witness"])
    assert checked.problems == [] and [r.payload.get("abandoned") for r in records] == [after.abandoned]
    assert await seal_orphans(fresh.engine, signing=signing, witness=None, sealer="again") == []  # once only


async def test_a_live_writers_chain_is_never_sealed(fresh: Fresh, signing: SigningKeys) -> None:
    alive = LedgerWriter(fresh.engine, signing=signing)
    await alive.record(_draft())
    assert await seal_orphans(fresh.engine, signing=signing, witness=None, sealer="start-up") == []
    with pytest.raises(ChainStillWritingError):
        await seal_abandoned(
            fresh.engine, alive.chain_id, signing=signing, reason="by hand", require_dead=False
        )
    await alive.record(_draft())  # and it goes on writing its own chain
    await alive.close()
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.closed and report.abandoned is None and report.events == 2


async def test_close_chain_by_hand(
    fresh: Fresh, key_file: Path, signing: SigningKeys, tmp_path: Path
) -> None:
    dead = await _dead_writer(fresh, key_file)
    env = {
        "GATEWAY_DATABASE_URL": fresh.url, "GATEWAY_SIGNING_KEY_FILE": str(key_file),
        "GATEWAY_REF_SECRET": REF_SECRET.decode(), "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness"),
    }  # fmt: skip

    def close(chain_id: str) -> object:
        return CliRunner().invoke(
            main, ["audit", "close-chain", chain_id, "--reason", "host lost in the outage of 28 Nov",
                   "--acting-user", "sec-ops-7"], env=env,
        )  # fmt: skip

    done = await asyncio.to_thread(close, dead)
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert f"sealed chain {dead} at event 3" in done.output  # type: ignore[attr-defined]
    reports = {r.chain_id: r for r in await verify_ledger(fresh.engine, signing.verification)}
    assert reports[dead].abandoned == "host lost in the outage of 28 Nov (closed by sec-ops-7)"
    again = await asyncio.to_thread(close, dead)
    assert again.exit_code == 1 and f"error: chain {dead} is already closed" in again.output  # type: ignore[attr-defined]
    unknown = await asyncio.to_thread(close, "no-such-chain")
    assert unknown.exit_code == 1 and "no chain no-such-chain" in unknown.output  # type: ignore[attr-defined]


async def test_close_chain_refuses_a_live_writer(fresh: Fresh, key_file: Path, signing: SigningKeys) -> None:
    alive = LedgerWriter(fresh.engine, signing=signing)
    await alive.record(_draft())
    env = {"GATEWAY_DATABASE_URL": fresh.url, "GATEWAY_SIGNING_KEY_FILE": str(key_file),
           "GATEWAY_REF_SECRET": REF_SECRET.decode(), "GATEWAY_AUDIT_WITNESS": "none"}  # fmt: skip
    done = await asyncio.to_thread(
        CliRunner().invoke, main, ["audit", "close-chain", alive.chain_id, "--reason", "looks stuck"], env=env
    )
    assert done.exit_code == 1
    assert "still running" in done.output
    await alive.close()
    async with fresh.engine.connect() as conn:
        abandoned = (await conn.execute(select(audit_checkpoints.c.abandoned))).scalars().all()
    assert set(abandoned) == {None}


async def test_sealing_errors_name_the_chain(fresh: Fresh, signing: SigningKeys) -> None:
    with pytest.raises(UnknownChainError, match="no chain nowhere"):
        await seal_abandoned(fresh.engine, "nowhere", signing=signing, reason="x")
    closed = LedgerWriter(fresh.engine, signing=signing)
    await closed.record(_draft())
    await closed.close()
    with pytest.raises(ChainClosedError, match="already closed"):
        await seal_abandoned(fresh.engine, closed.chain_id, signing=signing, reason="x", require_dead=False)


@pytest.fixture
async def pg_fresh(tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(postgres_admin_url(), tmp_path, today=FIXED_TODAY, people=20) as made:
        yield made


@pytest.mark.postgres
async def test_a_writer_cut_off_and_sealed_goes_on_in_a_new_chain(
    pg_fresh: Fresh, signing: SigningKeys
) -> None:
    """PostgreSQL (SQLite judges a writer by its process, which is this one): the writer's session
    ends (a restart, a dropped connection) and a starting gateway seals its chain; the writer's next
    event starts a new chain instead of forging one after the seal, and is answered."""
    fresh = pg_fresh
    writer = LedgerWriter(fresh.engine, signing=signing)
    await writer.record(_draft())
    first_chain = writer.chain_id
    async with fresh.engine.connect() as conn:
        await conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ))  # fmt: skip
    sealed = await seal_orphans(fresh.engine, signing=signing, witness=None, sealer="a restarted replica")
    assert [s.chain_id for s in sealed] == [first_chain]
    await writer.record(_draft())  # answered: a new connection, a new chain
    await writer.close()
    assert writer.chain_id != first_chain
    reports = {r.chain_id: r for r in await verify_ledger(fresh.engine, signing.verification)}
    assert reports[first_chain].ok and reports[first_chain].abandoned is not None
    assert (
        reports[writer.chain_id].ok
        and reports[writer.chain_id].events == 1
        and reports[writer.chain_id].closed
    )


async def test_a_live_writer_is_known_by_its_lock_not_by_its_pid_or_host(
    fresh: Fresh, signing: SigningKeys
) -> None:
    """A writer in another PID namespace or under another host name (a container) registers a pid or a
    host this process cannot see. Its lock (an advisory lock, or an flock on SQLite) still says it lives."""
    alive = LedgerWriter(fresh.engine, signing=signing)
    await alive.record(_draft())
    async with fresh.engine.begin() as conn:
        await drop_append_only(conn)
        await conn.execute(
            update(audit_chains).where(audit_chains.c.chain_id == alive.chain_id).values(
                process_id=4_000_000, host="another-host"
            )
        )  # fmt: skip
    assert await seal_orphans(fresh.engine, signing=signing, witness=None, sealer="start-up") == []
    with pytest.raises(ChainStillWritingError, match="still running"):
        await seal_abandoned(
            fresh.engine, alive.chain_id, signing=signing, reason="by hand", require_dead=False
        )
    await alive.close()


def test_what_the_database_supplies_is_printed_without_control_characters() -> None:
    from gateway.audit import ChainReport

    report = ChainReport("chain\x1b[2J\x07", 3, 1, closed=True, abandoned="died\x1b]0;owned\x07")
    line = report.describe()
    assert "\x1b" not in line and "\x07" not in line
    assert line.startswith("chain chain?[2J?: 3 events")


@pytest.mark.parametrize("chain_id", ["../../../../tmp/forged", "..%2F..%2Fx", "not-a-uuid", "A" * 36])
async def test_a_chain_id_no_writer_makes_is_never_a_path_and_never_sealed(
    chain_id: str, fresh: Fresh, signing: SigningKeys, tmp_path: Path
) -> None:
    """A DBA can put any text in audit_chains: it must not name a file the gateway writes or deletes."""
    async with fresh.engine.begin() as conn:
        await conn.execute(
            insert(audit_chains).values(
                chain_id=chain_id, started_at="2026-11-20T10:00:00.000000Z", host="gw", process_id=4_000_000,
                writer="gateway",
            )
        )  # fmt: skip
    directory = tmp_path / "deep" / "witness"
    witness = Witness(FileWitness(directory), signing)
    assert await seal_orphans(fresh.engine, signing=signing, witness=witness, sealer="start-up") == []
    witness.checkpoint(chain_id, "x.y.z")  # as if something tried
    await witness.flush(within=1)
    assert _written(tmp_path) == []
    reports = {r.chain_id: r for r in await verify_ledger(fresh.engine, signing.verification)}
    assert "a chain id no writer makes" in (reports[chain_id].problem or "")


async def test_a_live_writer_reached_through_a_symlink_is_still_alive(
    signing: SigningKeys, tmp_path: Path
) -> None:
    """SQLite: the lock files belong to the database file, however its path is spelled."""
    async with fresh_database("sqlite+aiosqlite:///", tmp_path, today=FIXED_TODAY, people=10) as made:
        alive = LedgerWriter(made.engine, signing=signing)
        await alive.record(_draft())
        link = tmp_path / "link.db"
        link.symlink_to(tmp_path / "fresh.db")
        other = create_engine(f"sqlite+aiosqlite:///{link}")
        try:
            assert await seal_orphans(other, signing=signing, witness=None, sealer="via a symlink") == []
            with pytest.raises(ChainStillWritingError):
                await seal_abandoned(other, alive.chain_id, signing=signing, reason="x", require_dead=False)
        finally:
            await other.dispose()
        await alive.close()


def _written(directory: Path) -> list[str]:
    return sorted(str(path) for pattern in ("*forged*", "*.jsonl") for path in directory.rglob(pattern))
