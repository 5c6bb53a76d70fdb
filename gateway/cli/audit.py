"""`gateway audit search`, `gateway audit verify` and `gateway sar`: the ledger from the command line.

Reading the ledger is itself recorded in it, under the security-audit agreement, before anything
is printed (no audit, no output). The command line writes its own chain, as every process does.
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from joserfc.jwk import KeySet

from gateway.audit import (
    ChainReport,
    EventDraft,
    LedgerQueries,
    LedgerWriter,
    SubjectAccessReport,
    render_text,
    subject_access_report,
    time_text,
    verify_ledger,
)
from gateway.cli.support import fail, load_settings, run
from gateway.config import Settings
from gateway.db import create_engine
from gateway.keys import SigningKeyError, SigningKeys, load_key_file
from policies import load_agreements
from schema.ledger_records import AuditEventRecord, EventFilter

LEDGER_AGREEMENT = "security-audit"

_who = click.option("--acting-user", default=None, help="Who is asking (default: the login name).")
_why = click.option("--case-reference", default=None, help="The investigation or request this is for.")


@click.group(help="The access ledger: every request, who saw what, when and why.")
def audit() -> None:
    pass


@audit.command("search", help="Audit events, newest first.")
@click.option("--client", default=None)
@click.option("--agreement", default=None)
@click.option("--outcome", type=click.Choice(["allowed", "denied", "error"]), default=None)
@click.option("--from", "start", type=click.DateTime(), default=None, help="At or after (UTC).")
@click.option("--to", "end", type=click.DateTime(), default=None, help="Before (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_who
@_why
def audit_search(
    client: str | None,
    agreement: str | None,
    outcome: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    as_json: bool,
    acting_user: str | None,
    case_reference: str | None,
) -> None:
    settings = load_settings()
    criteria = EventFilter(client=client, agreement=agreement, outcome=outcome, start=start, end=end)

    async def search() -> list[AuditEventRecord]:
        engine = create_engine(settings.database_url)
        try:
            page = await LedgerQueries(engine, load_agreements(settings.agreements_dir)).search_events(
                criteria, first=limit, after=None
            )
            await _record(settings, engine, "audit search", acting_user, case_reference)
            return [record for _, record in page.items]
        finally:
            await engine.dispose()

    events = run(search)
    if as_json:
        click.echo(json.dumps([_event_json(e) for e in events], indent=2))
        return
    for e in events:
        agreement_label = f"{e.agreement_id}@{e.agreement_version}" if e.agreement_id else "-"
        click.echo(
            f"{time_text(e.occurred_at)}  {e.outcome:<7} {e.http_status:>3}  {e.endpoint:<7} "
            f"{e.client_id or '-':<40} {agreement_label:<24} people={e.people_count:<4} "
            f"{e.error_code or '':<26} {e.id}"
        )


@audit.command("verify", help="Check every chain's hashes and signed checkpoints; exit 1 on the first fault.")
@click.option(
    "--strict", is_flag=True,
    help="Also fail on events left unsigned for more than five minutes (a live writer signs every minute).",
)  # fmt: skip
@click.option(
    "--jwks", "jwks_files", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
    help="Public keys to check signatures with, repeatable: the current set and every retired key's "
    "archive (default: the keys of GATEWAY_SIGNING_KEY_FILE).",
)  # fmt: skip
@_who
@_why
def audit_verify(
    strict: bool, jwks_files: tuple[Path, ...], acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()
    if jwks_files:
        found = [key for path in jwks_files for key in json.loads(path.read_text(encoding="utf-8"))["keys"]]
        keys = KeySet.import_key_set({"keys": found})
    else:
        signing = _signing_keys(settings)
        if signing is None:
            fail("no keys to check checkpoints with: pass --jwks or set GATEWAY_SIGNING_KEY_FILE")
        keys = signing.verification

    async def verify() -> list[ChainReport]:
        engine = create_engine(settings.database_url)
        try:
            reports = await verify_ledger(engine, keys, strict_age=timedelta(minutes=5) if strict else None)
            await _record(settings, engine, "audit verify", acting_user, case_reference)
            return reports
        finally:
            await engine.dispose()

    reports = run(verify)
    for report in reports:
        click.echo(report.describe())
    failed = [r for r in reports if not r.ok]
    events = sum(r.events for r in reports)
    if failed:
        fail(f"{len(failed)} of {len(reports)} chains failed verification")
    click.echo(f"ledger intact: {len(reports)} chains, {events} events")


@click.command(help="Subject access report: what is held about a person and every disclosure of it.")
@click.argument("person_id", type=click.IntRange(1))
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_who
@_why
def sar(person_id: int, output: str, acting_user: str | None, case_reference: str | None) -> None:
    settings = load_settings()

    async def report() -> SubjectAccessReport:
        engine = create_engine(settings.database_url)
        try:
            made = await subject_access_report(
                engine, person_id, agreements=load_agreements(settings.agreements_dir)
            )
            await _record(
                settings, engine, "sar", acting_user, case_reference,
                disclosures=((person_id, ("subjectAccessReport",)),),
            )  # fmt: skip
            return made
        finally:
            await engine.dispose()

    made = run(report)
    if output == "json":
        click.echo(json.dumps(made.as_json(), indent=2))
    else:
        click.echo(render_text(made), nl=False)


async def _record(
    settings: Settings,
    engine: Any,
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
    writer = LedgerWriter(engine, signing=_signing_keys(settings), writer="cli")
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


def _signing_keys(settings: Settings) -> SigningKeys | None:
    try:
        return load_key_file(settings.signing_key_file)
    except SigningKeyError:
        return None


def _event_json(record: AuditEventRecord) -> dict[str, Any]:
    out = asdict(record)
    out["occurred_at"] = time_text(record.occurred_at)
    out["lawful_basis"] = list(record.lawful_basis)
    out["fields_disclosed"] = list(record.fields_disclosed)
    out["fields_withheld"] = list(record.fields_withheld)
    return out
