"""`gateway audit search|verify|close-chain|retention` and `gateway sar`: the ledger from the command line.

Reading the ledger is itself recorded in it, under the security-audit agreement, before anything
is printed (no audit, no output). The command line writes its own chain, as every process does.
`audit verify` is the exception: it only reads, over a read-only connection, so that it can check a
replica, a restored backup or a copy; `--record` adds its event afterwards, as a separate step.
"""

from __future__ import annotations

import getpass
import json
import time
import unicodedata
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import (
    ChainReport,
    EventDraft,
    LedgerQueries,
    LedgerWriter,
    SealedChain,
    SubjectAccessReport,
    WitnessReport,
    render_html,
    render_text,
    seal_abandoned,
    subject_access_report,
    time_text,
    verify_ledger,
    verify_witness,
    witness_for,
)
from gateway.audit.retention import RetentionPlan, apply_retention, plan_retention
from gateway.audit.verification import printable
from gateway.audit.witness import witness_files
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import Settings, council_today
from gateway.keys import signing_keys
from policies import load_agreements
from policies.retention import RetentionFileError, load_retention
from schema.ledger_records import AuditEventRecord, EventFilter

LEDGER_AGREEMENT = "security-audit"
COUNCIL = "Westminster City Council"


def _plain_text(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """What the ledger records of the command's caller: plain text, at most 200 characters (no control
    or format characters that would drive a terminal reading it back)."""
    if value is None:
        return None
    if (
        not value.strip()
        or len(value) > 200
        or any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") for c in value)
    ):
        option = (parameter.name or "value").replace("_", "-")
        fail(f"--{option}: plain text of 1 to 200 characters")
    return value.strip()


who_option = click.option(
    "--acting-user",
    default=None,
    callback=_plain_text,
    help="Who is asking (default: the login name); recorded.",
)
why_option = click.option(
    "--case-reference", default=None, callback=_plain_text,
    help="The investigation or request you ask for; recorded.",
)  # fmt: skip


@click.group(help="The access ledger: every request, who saw what, when and why.")
def audit() -> None:
    pass


@audit.command("search", help="Audit events, newest first.")
@click.option("--client", default=None)
@click.option("--agreement", default=None)
@click.option(
    "--outcome", type=click.Choice(["allowed", "denied", "error", "disconnected", "alert"]), default=None
)
@click.option("--officer", default=None, help="Events naming this acting user.")
@click.option("--case", "case", default=None, help="Events for this case reference.")
@click.option("--from", "start", type=click.DateTime(), default=None, help="At or after (UTC).")
@click.option("--to", "end", type=click.DateTime(), default=None, help="Before (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def audit_search(
    client: str | None,
    agreement: str | None,
    outcome: str | None,
    officer: str | None,
    case: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    as_json: bool,
    acting_user: str | None,
    case_reference: str | None,
) -> None:
    settings = load_settings()
    criteria = EventFilter(
        client=client,
        agreement=agreement,
        outcome=outcome,
        start=start,
        end=end,
        acting_user=officer,
        case_reference=case,
    )

    async def search() -> list[AuditEventRecord]:
        async with open_database(settings) as engine:
            page = await LedgerQueries(engine, load_agreements(settings.agreements_dir)).search_events(
                criteria, first=limit, after=None
            )
            await record_command(settings, engine, "audit search", acting_user, case_reference)
            return [record for _, record in page.items]

    events = run(search)
    if as_json:
        click.echo(json.dumps([_event_json(e) for e in events], indent=2))
        return
    for e in events:
        agreement_label = f"{e.agreement_id}@{e.agreement_version}" if e.agreement_id else "-"
        click.echo(
            f"{time_text(e.occurred_at)}  {e.outcome:<12} {e.http_status:>3}  {e.endpoint:<7} "
            f"{e.client_id or '-':<40} {agreement_label:<24} people={e.people_count:<4} "
            f"{e.error_code or '':<26} {e.id}"
        )


@audit.command(
    "verify",
    help="Check every chain's hashes and signed checkpoints, and the witness when given; exit 1 on a fault. "
    "Reads only, over a read-only connection: a replica, a restored backup or a copy will do.",
)
@click.option(
    "--strict", is_flag=True,
    help="Also fail on events left unsigned for more than five minutes (a live writer signs every minute), "
    "and on chains the witness given never named.",
)  # fmt: skip
@click.option(
    "--jwks", "jwks_files", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
    help="Public keys to check signatures with, repeatable: the current set and every retired key's "
    "archive (default: the keys of GATEWAY_SIGNING_KEY_FILE).",
)  # fmt: skip
@click.option(
    "--witness", "witness_paths", type=click.Path(path_type=Path), multiple=True,
    help="Witness files or directories to hold the database to, repeatable (see GATEWAY_AUDIT_WITNESS).",
)  # fmt: skip
@click.option("--record", is_flag=True, help="Afterwards, record who ran the check in the ledger (writes).")
@who_option
@why_option
def audit_verify(
    strict: bool,
    jwks_files: tuple[Path, ...],
    witness_paths: tuple[Path, ...],
    record: bool,
    acting_user: str | None,
    case_reference: str | None,
) -> None:
    settings = load_settings()
    keys = _verification_keys(settings, jwks_files)
    witness_files(witness_paths)  # a path that is not there is said before the database is opened

    async def verify() -> tuple[list[ChainReport], WitnessReport | None]:
        async with open_database(settings, read_only=True) as engine:
            reports = await verify_ledger(engine, keys, strict_age=timedelta(minutes=5) if strict else None)
            checked = await verify_witness(engine, keys, witness_paths) if witness_paths else None
        return reports, checked

    reports, checked = run(verify)
    for report in reports:
        click.echo(report.describe())
    problems = [f"{len([r for r in reports if not r.ok])} of {len(reports)} chains failed verification"]
    problems = problems if any(not r.ok for r in reports) else []
    if checked is not None:
        click.echo(
            f"witness: {checked.records} records in {checked.files} files; "
            f"the registration of {len(checked.chains)} chains witnessed"
        )
        for problem in checked.problems:
            click.echo(f"witness: FAILED: {problem}")
        for chain_id in checked.unwitnessed:
            unseen = printable(chain_id)
            click.echo(f"witness: chain {unseen} is in the database but its registration was never witnessed")
        if checked.problems:
            problems.append(f"{len(checked.problems)} witness records do not match the database")
        if strict and checked.unwitnessed:
            problems.append(f"{len(checked.unwitnessed)} chains' registrations were never witnessed")
    if record:

        async def write() -> None:
            async with open_database(settings) as engine:
                await record_command(settings, engine, "audit verify", acting_user, case_reference)

        run(write)
    if problems:
        fail("; ".join(problems))
    events = sum(r.events for r in reports)
    witnessed_too = " and the witness agrees" if checked is not None else ""
    click.echo(f"ledger intact: {len(reports)} chains, {events} events{witnessed_too}")


@audit.command(
    "close-chain",
    help="Seal the chain of a writer that died (kill -9, a lost host) with a signed 'abandoned' checkpoint "
    "at its last event. Refused while the writer is alive.",
)
@click.argument("chain_id")
@click.option("--reason", required=True, help="Why the chain is being sealed (kept, signed, in the ledger).")
@who_option
@why_option
def audit_close_chain(
    chain_id: str, reason: str, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()
    signing = signing_keys(settings)
    user = acting_user or getpass.getuser()

    async def close() -> SealedChain:
        witness = witness_for(settings.witness, signing)
        async with open_database(settings) as engine:
            sealed = await seal_abandoned(
                engine, chain_id, signing=signing, reason=f"{reason} (closed by {user})", witness=witness,
                require_dead=False,
            )  # fmt: skip
            await record_command(settings, engine, "audit close-chain", acting_user, case_reference)
        if witness is not None:
            await witness.flush()
        return sealed

    sealed = run(close)
    click.echo(f"sealed chain {sealed.chain_id} at event {sealed.seq}: {sealed.reason}")


@audit.command(
    "retention",
    help="Drop the ledger's months older than GATEWAY_LEDGER_RETENTION_MONTHS (PostgreSQL; as the migrator "
    "role), leaving a signed record of what each chain lost. Shows what it would drop unless --apply.",
)
@click.option("--apply", "apply_", is_flag=True, help="Drop them (default: only show what would go).")
@click.option(
    "--months", type=click.IntRange(12, 1200), default=None, help="Default: GATEWAY_LEDGER_RETENTION_MONTHS."
)
@who_option
@why_option
def audit_retention(
    apply_: bool, months: int | None, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()
    kept = months or settings.ledger_retention_months
    today = datetime.now(UTC).date()  # the partitions are UTC months

    async def plan() -> RetentionPlan:
        async with open_database(settings) as engine:
            if not apply_:
                return await plan_retention(engine, months=kept, today=today)
            signing = signing_keys(settings)
            # The event first, as for every change: a drop the ledger cannot record does not happen.
            await record_command(settings, engine, "audit retention --apply", acting_user, case_reference)
            return await apply_retention(engine, signing, months=kept, today=today)

    made = run(plan)
    click.echo(json.dumps({"applied": apply_, "months_kept": kept, **made.describe()}, indent=2))


@click.command(help="Subject access report: what is held about a person and every disclosure of it.")
@click.argument("person_id", type=click.IntRange(1))
@click.option(
    "--format", "output", type=click.Choice(["text", "json", "html"]), default="text", show_default=True,
    help="html: a document a caseworker can send (print it to PDF from any browser).",
)  # fmt: skip
@who_option
@why_option
def sar(person_id: int, output: str, acting_user: str | None, case_reference: str | None) -> None:
    settings = load_settings()
    try:
        retention = load_retention(settings.retention_file)
    except RetentionFileError as error:
        fail(f"GATEWAY_RETENTION_FILE: {error}")

    async def report() -> SubjectAccessReport:
        async with open_database(settings) as engine:
            made = await subject_access_report(
                engine, person_id, agreements=load_agreements(settings.agreements_dir), retention=retention
            )
            await record_command(
                settings, engine, "sar", acting_user, case_reference,
                disclosures=((person_id, ("subjectAccessReport",)),),
            )  # fmt: skip
            return made

    made = run(report)
    if output == "json":
        click.echo(json.dumps(made.as_json(), indent=2))
    elif output == "html":
        click.echo(render_html(made, council=COUNCIL, today=council_today()), nl=False)
    else:
        click.echo(render_text(made), nl=False)


async def record_command(
    settings: Settings,
    engine: AsyncEngine,
    operation: str,
    acting_user: str | None,
    case_reference: str | None,
    *,
    disclosures: tuple[tuple[int, tuple[str, ...]], ...] = (),
) -> None:
    """Write this command's own audit event; raises AuditUnavailableError if it cannot."""
    started = time.perf_counter()
    agreement = load_agreements(settings.agreements_dir).get(LEDGER_AGREEMENT)
    user = getpass.getuser()
    # The command's chain is signed and witnessed like a gateway's: a missing key is an error here.
    signing = signing_keys(settings)
    writer = LedgerWriter(
        engine, signing=signing, writer="cli", witness=witness_for(settings.witness, signing), heads=False
    )
    draft = EventDraft(
        endpoint="cli",
        outcome="allowed",
        http_status=0,  # not an HTTP request
        latency_us=int((time.perf_counter() - started) * 1_000_000),
        client_id=f"cli:{user}"[:64],
        agreement_id=agreement.id if agreement else None,
        agreement_version=agreement.version if agreement else None,
        purpose=agreement.purpose if agreement else None,
        lawful_basis=agreement.lawful_basis if agreement else (),
        acting_user=(acting_user or user)[:200],
        case_reference=case_reference[:200] if case_reference else None,
        operation_name=operation,
        fields_disclosed=tuple(sorted({f for _, fields in disclosures for f in fields})),
        disclosures=disclosures,
    )
    try:
        await writer.record(draft)
    finally:
        await writer.close()


def _verification_keys(settings: Settings, jwks_files: tuple[Path, ...]) -> KeySet:
    if not jwks_files:
        if settings.signing_keys is None and not settings.signing_key_file.is_file():
            fail("no keys to check checkpoints with: pass --jwks or set GATEWAY_SIGNING_KEY_FILE")
        # Every key that ever signed and is known here: the archive of retired keys too.
        return signing_keys(settings).audit_verification
    try:
        found = [key for path in jwks_files for key in json.loads(path.read_text(encoding="utf-8"))["keys"]]
        return KeySet.import_key_set({"keys": found})
    except (OSError, ValueError, KeyError, TypeError, JoseError) as error:
        fail(f"--jwks: not a readable JWK set ({type(error).__name__})")


def _event_json(record: AuditEventRecord) -> dict[str, Any]:
    out = asdict(record)
    out["occurred_at"] = time_text(record.occurred_at)
    out["lawful_basis"] = list(record.lawful_basis)
    out["fields_disclosed"] = list(record.fields_disclosed)
    out["fields_withheld"] = list(record.fields_withheld)
    return out
