"""The witness: evidence outside the ledger's database. A real ledger is written (an app serving
police requests, and a second writer that signs every three events), each with its witness; then
copies of that database are tampered with as a DBA could (append-only triggers dropped first), and
`verify_witness` and `gateway audit verify --witness` must say what was done, where the database
alone cannot. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.audit import (
    EventDraft,
    LedgerWriter,
    Witness,
    read_witness,
    seal_abandoned,
    verify_ledger,
    verify_witness,
)
from gateway.audit.chains import sign_checkpoint
from gateway.audit.events import GENESIS, event_hash, event_row
from gateway.audit.tables import audit_chains, audit_checkpoints, audit_disclosures, audit_events
from gateway.audit.witness import FileWitness, SyslogWitness
from gateway.cli import main
from gateway.config import Settings
from gateway.db import create_engine
from gateway.keys import SigningKeys, generate_key, write_key_file
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.databases import postgres_copy
from tests.support.ledger import Fresh, drop_append_only, fresh_database
from tests.support.partners import enrol

PAGE = "query Page($first: Int) { people(first: $first) { edges { node { ref givenName } } } }"


@dataclass
class Ledger:
    fresh: Fresh
    witness_dir: Path
    served_chain: str  # the app's chain: a token request and five pages, one final checkpoint
    signed_chain: str  # a writer that signs every three events: ten events, checkpoints 3, 6, 9, final 10


@pytest.fixture
async def ledger(
    database_url: str, tmp_path: Path, settings: Settings, signing: SigningKeys
) -> AsyncIterator[Ledger]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY) as fresh:
        witness_dir = tmp_path / "witness"
        served = settings.model_copy(update={"database_url": fresh.url, "audit_witness": str(witness_dir)})
        app = create_app(
            served, engine=fresh.engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            # Its keys registered, its officer's token exchanged: one token request, as before.
            police = await enrol(
                fresh.engine, client, "police-prevention", ref_secret=REF_SECRET,
                jwks_dir=served.partner_jwks_dir,
            )  # fmt: skip
            token = await police.token()
            for first in range(1, 6):
                assert (await police.post(PAGE, {"first": first}, token=token)).status_code == 200
        # A second writer, while the app's chain is still open: its head at close names that chain.
        writer = LedgerWriter(
            fresh.engine,
            signing=signing,
            checkpoint_every=3,
            witness=Witness(FileWitness(witness_dir), signing),
        )
        for n in range(10):
            await writer.record(_draft(n))
        await writer.close()
        await app.state.gateway.ledger.close()
        yield Ledger(fresh, witness_dir, app.state.gateway.ledger.chain_id, writer.chain_id)


def _draft(n: int) -> EventDraft:
    return EventDraft(
        endpoint="graphql", outcome="allowed", http_status=200, latency_us=n, client_id="police-prevention-x",
        disclosures=((n + 1, ("ref", "givenName")),),
    )  # fmt: skip


@pytest.fixture
async def copy(ledger: Ledger, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A copy of the ledger's database, to tamper with."""
    url = make_url(ledger.fresh.url)
    if url.get_backend_name() == "sqlite":
        target = tmp_path / "copy.db"
        with sqlite3.connect(str(url.database)) as source, sqlite3.connect(target) as made:
            source.backup(made)
        engine = create_engine(f"sqlite+aiosqlite:///{target}")
        yield engine
        await engine.dispose()
        return
    await ledger.fresh.engine.dispose()  # a template may have no other sessions
    async with postgres_copy(ledger.fresh.url) as made:
        engine = create_engine(made)
        yield engine
        await engine.dispose()


async def _witness(engine: AsyncEngine, ledger: Ledger, keys: SigningKeys) -> list[str]:
    checked = await verify_witness(engine, keys.verification, [ledger.witness_dir])
    return checked.problems


async def test_the_witness_holds_for_an_untouched_copy(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    assert all(report.ok for report in await verify_ledger(copy, signing.verification))
    records, report = read_witness([ledger.witness_dir])
    kinds = sorted({record.kind for record in records})
    assert kinds == ["chain", "checkpoint", "head"]
    checked = await verify_witness(copy, signing.verification, [ledger.witness_dir])
    assert checked.problems == [] and checked.unwitnessed == []
    assert checked.chains == {ledger.served_chain, ledger.signed_chain}
    assert report.files == checked.files == 2  # one file per chain
    assert checked.records == len(records)


async def _purge(
    engine: AsyncEngine, chain_id: str, *, after_seq: int = 0, checkpoints_after: int = 0
) -> None:
    """Delete a chain's events after a position, with their disclosures and the checkpoints after
    `checkpoints_after`; with both 0, the chain's registration too."""
    async with engine.begin() as conn:
        await drop_append_only(conn)
        doomed = select(audit_events.c.id).where(
            audit_events.c.chain_id == chain_id, audit_events.c.seq > after_seq
        )
        await conn.execute(delete(audit_disclosures).where(audit_disclosures.c.event_id.in_(doomed)))
        await conn.execute(
            delete(audit_checkpoints).where(
                audit_checkpoints.c.chain_id == chain_id, audit_checkpoints.c.seq > checkpoints_after
            )
        )
        await conn.execute(
            delete(audit_events).where(audit_events.c.chain_id == chain_id, audit_events.c.seq > after_seq)
        )
        if after_seq == 0 and checkpoints_after == 0:
            await conn.execute(delete(audit_chains).where(audit_chains.c.chain_id == chain_id))


async def test_a_deleted_chain_is_found_only_by_the_witness(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    await _purge(copy, ledger.served_chain)
    reports = await verify_ledger(copy, signing.verification)
    assert all(report.ok for report in reports) and len(reports) == 1  # the database alone looks intact
    problems = await _witness(copy, ledger, signing)
    assert any(f"chain {ledger.served_chain}" in p and "is not in the database" in p for p in problems), (
        problems
    )


async def test_a_tail_deleted_with_its_checkpoints_is_found_only_by_the_witness(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    await _purge(
        copy, ledger.signed_chain, after_seq=6, checkpoints_after=6
    )  # events 7-10, checkpoints 9, 10
    reports = {report.chain_id: report for report in await verify_ledger(copy, signing.verification)}
    assert reports[ledger.signed_chain].ok and reports[ledger.signed_chain].events == 6
    problems = await _witness(copy, ledger, signing)
    assert any(f"checkpoint of chain {ledger.signed_chain} at event 9 was removed" in p for p in problems), (
        problems
    )
    assert any(
        f"final checkpoint of chain {ledger.signed_chain} at event 10 was removed" in p for p in problems
    )


async def test_a_removed_final_checkpoint_is_found_by_the_witness(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    async with copy.begin() as conn:
        await drop_append_only(conn)
        await conn.execute(
            delete(audit_checkpoints).where(
                audit_checkpoints.c.chain_id == ledger.served_chain, audit_checkpoints.c.final.is_(True)
            )
        )
    reports = {report.chain_id: report for report in await verify_ledger(copy, signing.verification)}
    assert (
        reports[ledger.served_chain].ok and not reports[ledger.served_chain].closed
    )  # an open chain, no more
    problems = await _witness(copy, ledger, signing)
    assert any(
        f"final checkpoint of chain {ledger.served_chain} at event 6 was removed" in p for p in problems
    ), problems


async def _rewrite_with_a_new_key(engine: AsyncEngine, chain_id: str, forger: SigningKeys) -> None:
    """Alter an event, recompute every hash after it, and sign the chain again with the forger's key."""
    async with engine.begin() as conn:
        await drop_append_only(conn)
        rows = [
            dict(row._mapping)
            for row in await conn.execute(
                select(audit_events).where(audit_events.c.chain_id == chain_id).order_by(audit_events.c.seq)
            )
        ]
        finals = {
            int(row.seq): bool(row.final)
            for row in await conn.execute(
                select(audit_checkpoints).where(audit_checkpoints.c.chain_id == chain_id)
            )
        }
        await conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.chain_id == chain_id))
        prev = GENESIS
        for row in rows:
            disclosures = [
                (int(d.person_id), d.fields)
                for d in await conn.execute(
                    select(audit_disclosures).where(audit_disclosures.c.event_id == row["id"])
                )
            ]
            if row["seq"] == 2:
                row["acting_user"] = "someone-else"
            row["prev_hash"] = prev
            row["hash"] = event_hash(row, disclosures)
            await conn.execute(
                audit_events.update()
                .where(audit_events.c.id == row["id"])
                .values(acting_user=row["acting_user"], prev_hash=row["prev_hash"], hash=row["hash"])
            )
            prev = row["hash"]
            if int(row["seq"]) in finals:
                signed = sign_checkpoint(
                    forger, chain_id, int(row["seq"]), prev, final=finals[int(row["seq"])]
                )
                await conn.execute(insert(audit_checkpoints).values(**signed))


async def test_a_ledger_rewritten_under_a_replaced_signing_key_is_found_by_the_witness(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    forger = SigningKeys.from_keys([generate_key()])
    await _rewrite_with_a_new_key(copy, ledger.served_chain, forger)
    # With the forger's key in place of the real one, the database verifies.
    assert all(
        report.ok
        for report in await verify_ledger(copy, forger.verification)
        if report.chain_id == ledger.served_chain
    )
    problems = await _witness(copy, ledger, forger)
    assert any("does not verify with the keys given (the signing key was replaced" in p for p in problems), (
        problems
    )
    # Given both keys (as if the forger's had been published as a rotation), the signatures differ.
    both = SigningKeys.from_keys([forger.active, signing.active])
    checked = await verify_witness(copy, both.verification, [ledger.witness_dir])
    assert any(
        f"chain {ledger.served_chain} at event 6 differs from the one witnessed (re-signed or replaced)" in p
        for p in checked.problems
    ), checked.problems


async def test_an_edited_witness_line_is_a_problem(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    target = ledger.witness_dir / f"{ledger.served_chain}.jsonl"
    lines = target.read_text().splitlines()
    lines.insert(1, '{"witness": "checkpoint", "jws": "not.a.jws"}')
    target.write_text("\n".join(lines) + "\n")
    problems = await _witness(copy, ledger, signing)
    assert any(f"{target}:2: not a witness record" in p for p in problems), problems


async def test_the_command_line_reports_what_the_witness_found(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys, tmp_path: Path
) -> None:
    await _purge(copy, ledger.served_chain)
    key_file = tmp_path / "keys.json"
    write_key_file(key_file, [signing.active])
    copy_url = copy.url.render_as_string(hide_password=False)
    env = {
        "GATEWAY_DATABASE_URL": copy_url, "GATEWAY_SIGNING_KEY_FILE": str(key_file),
        "GATEWAY_REF_SECRET": REF_SECRET.decode(), "GATEWAY_AUDIT_WITNESS": str(tmp_path / "cli-witness"),
    }  # fmt: skip
    without = await asyncio.to_thread(CliRunner().invoke, main, ["audit", "verify"], env=env)
    assert without.exit_code == 0 and "ledger intact: 1 chains" in without.output
    with_witness = await asyncio.to_thread(
        CliRunner().invoke, main, ["audit", "verify", "--witness", str(ledger.witness_dir)], env=env
    )
    assert with_witness.exit_code == 1, with_witness.output
    assert (
        f"witness: FAILED: {ledger.witness_dir / ledger.served_chain}.jsonl:1: chain {ledger.served_chain}"
        in (with_witness.output)
    )
    assert "witness records do not match the database" in with_witness.output


async def test_a_chain_never_witnessed_fails_only_when_strict(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys, tmp_path: Path
) -> None:
    unwitnessed = LedgerWriter(copy, signing=signing)  # no witness configured
    await unwitnessed.record(_draft(1))
    await unwitnessed.close()
    key_file = tmp_path / "keys.json"
    write_key_file(key_file, [signing.active])
    env = {
        "GATEWAY_DATABASE_URL": copy.url.render_as_string(hide_password=False),
        "GATEWAY_SIGNING_KEY_FILE": str(key_file), "GATEWAY_REF_SECRET": REF_SECRET.decode(),
    }  # fmt: skip
    args = ["audit", "verify", "--witness", str(ledger.witness_dir)]
    plain = await asyncio.to_thread(CliRunner().invoke, main, args, env=env)
    assert plain.exit_code == 0, plain.output
    unseen = (
        f"witness: chain {unwitnessed.chain_id} is in the database but its registration was never witnessed"
    )
    assert unseen in plain.output
    strict = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--strict"], env=env)
    assert strict.exit_code == 1 and "1 chains' registrations were never witnessed" in strict.output


async def test_a_chain_forged_in_the_database_is_not_made_good_by_sealing(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys, tmp_path: Path
) -> None:
    """A DBA inserts a whole chain (registration naming a dead writer, hash-chained events); a gateway
    starting up seals it, signing and witnessing the seal. The witness still never saw the chain
    registered: --strict fails, and the seal says its events were never signed by a writer."""
    forged = "00000000-0000-4000-8000-00000000f0f0"
    async with copy.begin() as conn:
        await conn.execute(
            insert(audit_chains).values(
                chain_id=forged, started_at="2026-11-20T10:00:00.000000Z", host="gw-1", process_id=4_000_000,
                writer="gateway",
            )
        )  # fmt: skip
        prev = GENESIS
        for seq in range(1, 4):
            row = event_row(_draft(seq), chain_id=forged, seq=seq, prev_hash=prev)
            await conn.execute(insert(audit_events).values(**row))
            await conn.execute(
                insert(audit_disclosures).values(
                    event_id=row["id"],
                    person_id=seq + 1,
                    fields="ref,givenName",
                    recorded_at=row["occurred_at"],
                )
            )
            prev = row["hash"]
    witness = Witness(FileWitness(ledger.witness_dir), signing)
    sealed = await seal_abandoned(
        copy, forged, signing=signing, reason="start-up", witness=witness, require_dead=False
    )
    assert sealed.seq == 3
    assert await witness.flush()
    reports = {r.chain_id: r for r in await verify_ledger(copy, signing.verification)}
    assert reports[forged].ok and reports[forged].sealed_unsigned == 3
    assert "events 1 to 3 were sealed without their writer's signature" in reports[forged].describe()
    checked = await verify_witness(copy, signing.verification, [ledger.witness_dir])
    assert checked.problems == [] and checked.unwitnessed == [forged]  # --strict fails on it


async def test_a_syslog_witness_can_be_verified_from_what_the_collector_kept(
    fresh_for_syslog: Fresh, signing: SigningKeys, tmp_path: Path
) -> None:
    """Records sent to a syslog server over TCP (octet-counted), kept by the collector with its own
    prefix on each line, verify like a file witness."""
    received: list[bytes] = []
    handling: set[asyncio.Task[None] | None] = set()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handling.add(asyncio.current_task())
        try:
            received.append(await reader.read())
            writer.close()
        finally:
            handling.discard(asyncio.current_task())

    server = await asyncio.start_server(collect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    witness = Witness(SyslogWitness("127.0.0.1", port), signing)
    other = LedgerWriter(fresh_for_syslog.engine, signing=signing, witness=witness)
    await other.record(_draft(99))  # open while the first closes: the first's head names it
    writer = LedgerWriter(fresh_for_syslog.engine, signing=signing, checkpoint_every=2, witness=witness)
    for n in range(5):
        await writer.record(_draft(n))
    await writer.close()
    await other.close()
    for _ in range(500):  # the collector has read every connection to its end, the final head's too
        if not handling and any(b'"witness":"head"' in stream for stream in received):
            break
        await asyncio.sleep(0.01)
    server.close()
    await server.wait_closed()
    kept = tmp_path / "syslog.log"
    with kept.open("w") as out:
        for stream in received:
            while stream:
                length, _, rest = stream.partition(b" ")
                message, stream = rest[: int(length)], rest[int(length) :]
                out.write("Nov 29 10:00:00 collector " + message.decode() + "\n")
    records, _ = read_witness([kept])
    assert {record.kind for record in records} == {"chain", "checkpoint", "head"}
    checked = await verify_witness(fresh_for_syslog.engine, signing.verification, [kept])
    assert checked.problems == [] and checked.chains == {writer.chain_id, other.chain_id}


@pytest.fixture
async def fresh_for_syslog(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY, people=20) as made:
        yield made


async def test_a_failing_witness_never_stops_the_ledger_and_catches_up(
    fresh_for_syslog: Fresh, signing: SigningKeys, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the witness directory should be")
    failures: list[int] = []
    sink = FileWitness(blocked)
    writer = LedgerWriter(
        fresh_for_syslog.engine, signing=signing, checkpoint_every=2,
        witness=Witness(sink, signing, on_failure=lambda: failures.append(1)),
    )  # fmt: skip
    for n in range(4):
        await writer.record(_draft(n))  # answered although the witness cannot be written
    assert failures, "the failure was not reported"
    blocked.unlink()
    sink.directory = tmp_path / "witness"  # the storage comes back
    for n in range(4, 6):
        await writer.record(_draft(n))
    await writer.close()
    records, _ = read_witness([tmp_path / "witness"])
    checked = await verify_witness(fresh_for_syslog.engine, signing.verification, [tmp_path / "witness"])
    witnessed = sorted(int(r.payload["seq"]) for r in records if r.kind == "checkpoint")
    assert witnessed == [
        2,
        4,
        6,
        6,
    ]  # the two it missed, then the rest: 6 twice (the running one, then the final)
    assert checked.problems == []
    assert (tmp_path / "witness" / f"{writer.chain_id}.jsonl").stat().st_mode & 0o777 == 0o600


def test_the_sink_is_chosen_by_the_setting(tmp_path: Path) -> None:
    from gateway.audit.witness import witness_sink
    from gateway.config import parse_witness

    assert witness_sink(parse_witness("none")) is None
    assert witness_sink(parse_witness("")) is None
    file_sink = witness_sink(parse_witness(str(tmp_path)))
    assert isinstance(file_sink, FileWitness) and file_sink.directory == tmp_path
    assert isinstance(witness_sink(parse_witness(f"file://{tmp_path}")), FileWitness)
    syslog = witness_sink(parse_witness("syslog+tcp://127.0.0.1:6514"))
    assert isinstance(syslog, SyslogWitness) and (syslog.host, syslog.port) == ("127.0.0.1", 6514)
    for bad in ("syslog+tcp://nohost", "s3://bucket/x"):
        with pytest.raises(ValueError, match=r"syslog|directory"):
            parse_witness(bad)


async def test_a_hung_witness_stops_neither_the_ledger_nor_its_shutdown(
    fresh_for_syslog: Fresh, signing: SigningKeys, tmp_path: Path
) -> None:
    """The chain's witness file is a FIFO nobody reads, as a stuck network mount would hang an
    open: events are still committed at once, and closing gives up on the witness after a while."""
    directory = tmp_path / "witness"
    directory.mkdir()
    failures: list[int] = []
    witness = Witness(FileWitness(directory), signing, on_failure=lambda: failures.append(1), stuck_after=0.3)
    writer = LedgerWriter(fresh_for_syslog.engine, signing=signing, checkpoint_every=1, witness=witness)
    fifo = directory / f"{writer.chain_id}.jsonl"
    os.mkfifo(fifo)
    try:
        started = time.monotonic()
        for n in range(5):
            await asyncio.wait_for(writer.record(_draft(n)), timeout=5)  # each commit checkpoints
            await asyncio.sleep(0.2)
        assert time.monotonic() - started < 5
        assert failures, "a hung sink must be reported while it hangs, not only at shutdown"
        closing = time.monotonic()
        await asyncio.wait_for(writer.close(), timeout=20)
        assert time.monotonic() - closing < 10
    finally:
        witness.stop()
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # let the witness thread go, and end
        os.close(reader)
    [report] = await verify_ledger(fresh_for_syslog.engine, signing.verification)
    assert report.ok and report.closed and report.events == 5


def test_heads_are_cut_to_records_syslog_can_carry(signing: SigningKeys, tmp_path: Path) -> None:
    written: list[tuple[str, list[str]]] = []

    class Kept:
        def append(self, chain_id: str, lines: Sequence[str]) -> None:
            written.append((chain_id, list(lines)))

    witness = Witness(Kept(), signing)
    positions = {f"chain-{n:03}": (n, f"{n:064x}") for n in range(100)}
    witness.head("writer", positions)
    assert asyncio.run(witness.flush())
    lines = [line for _, lines in written for line in lines]
    assert len(lines) == 3 and all(len(line) < 8_000 for line in lines)
    records, _ = read_witness([_write_lines(tmp_path / "w.jsonl", lines)])
    named = {chain for record in records for chain in record.payload["chains"]}
    assert named == set(positions)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


async def test_a_command_line_run_writes_no_ledger_wide_head(
    fresh_for_syslog: Fresh, signing: SigningKeys, tmp_path: Path
) -> None:
    """Each CLI run is a chain of its own; if each also listed every chain, the witness would grow with
    the square of the runs. Short-lived writers leave heads to the gateways."""
    directory = tmp_path / "witness"
    open_chain = LedgerWriter(fresh_for_syslog.engine, signing=signing)
    await open_chain.record(_draft(0))
    for n in range(3):
        run = LedgerWriter(
            fresh_for_syslog.engine,
            signing=signing,
            witness=Witness(FileWitness(directory), signing),
            heads=False,
        )
        await run.record(_draft(n))
        await run.close()
    records, _ = read_witness([directory])
    assert sorted({record.kind for record in records}) == ["chain", "checkpoint"]
    gateway = LedgerWriter(
        fresh_for_syslog.engine, signing=signing, witness=Witness(FileWitness(directory), signing)
    )
    await gateway.record(_draft(9))
    await gateway.close()
    heads = [record for record in read_witness([directory])[0] if record.kind == "head"]
    # The gateway's first head names the chains still open (not the three closed runs, nor itself, closed).
    assert [sorted(head.payload["chains"]) for head in heads] == [[open_chain.chain_id]]
    await open_chain.close()


async def test_a_malformed_record_is_reported_and_the_check_goes_on(
    ledger: Ledger, copy: AsyncEngine, signing: SigningKeys
) -> None:
    target = ledger.witness_dir / f"{ledger.served_chain}.jsonl"
    header = base64.urlsafe_b64encode(b'{"alg":"ES256"}').decode().rstrip("=")
    for chains in (b"5", b"[1,2]", b'{"x": "not a position"}'):
        payload = base64.urlsafe_b64encode(b'{"kind":"head","chains":' + chains + b"}").decode().rstrip("=")
        with target.open("a") as out:
            out.write(json.dumps({"witness": "head", "jws": f"{header}.{payload}.c2ln"}) + "\n")
    checked = await verify_witness(copy, signing.verification, [ledger.witness_dir])
    assert sum("does not verify" in problem for problem in checked.problems) == 3
    assert checked.chains == {ledger.served_chain, ledger.signed_chain}  # the good records still counted
