"""`gateway breakglass list|review`: the break-glass review queue."""

from __future__ import annotations

import json
from typing import Any

import click

from gateway.cli.audit import record_command, who_option, why_option
from gateway.cli.support import load_settings, open_database, run
from gateway.guard import OUTCOMES, BreakGlassRecord, list_break_glass, review_break_glass


@click.group(help="Break-glass windows (MASH) and their review.")
def breakglass() -> None:
    pass


@breakglass.command("list", help="Break-glass windows, newest first; --pending: those not yet reviewed.")
@click.option("--pending", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def breakglass_list(
    pending: bool, as_json: bool, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()

    async def read() -> list[BreakGlassRecord]:
        async with open_database(settings) as engine:
            async with engine.connect() as conn:
                found = await list_break_glass(conn, pending=pending)
            await record_command(settings, engine, "breakglass list", acting_user, case_reference)
            return found

    found = run(read)
    if as_json:
        click.echo(json.dumps([_json(record) for record in found], indent=2))
        return
    for r in found:
        state = "PENDING" if r.reviewed_at is None else f"{r.review_outcome} by {r.reviewer}"
        click.echo(
            f"{r.id}  {r.opened_at.isoformat(timespec='seconds')}  {r.agreement_id}  officer={r.officer}  "
            f"case={r.case_reference}  {state}"
        )


@breakglass.command("review", help="Record the review of a break-glass: justified or escalated, with a note.")
@click.argument("break_glass_id")
@click.option("--outcome", type=click.Choice(OUTCOMES), required=True)
@click.option("--reviewer", required=True)
@click.option("--note", required=True)
def breakglass_review(break_glass_id: str, outcome: str, reviewer: str, note: str) -> None:
    settings = load_settings()

    async def review() -> BreakGlassRecord:
        async with open_database(settings) as engine:
            async with engine.begin() as conn:
                reviewed = await review_break_glass(
                    conn, break_glass_id, outcome=outcome, reviewer=reviewer, note=note
                )
            # The review is evidence too: it joins the ledger, under the reviewer's name.
            await record_command(
                settings, engine, f"breakglass review {outcome}", reviewer, reviewed.case_reference
            )
            return reviewed

    reviewed = run(review)
    click.echo(f"{reviewed.id}: {reviewed.review_outcome} by {reviewed.reviewer}")


def _json(r: BreakGlassRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "event_id": r.event_id,
        "opened_at": r.opened_at.isoformat(),
        "expires_at": r.expires_at.isoformat(),
        "client_id": r.client_id,
        "agreement_id": r.agreement_id,
        "officer": r.officer,
        "officer_issuer": r.officer_issuer,
        "case_reference": r.case_reference,
        "reason": r.reason,
        "reviewed_at": r.reviewed_at.isoformat() if r.reviewed_at else None,
        "reviewer": r.reviewer,
        "outcome": r.review_outcome,
        "note": r.review_note,
    }
