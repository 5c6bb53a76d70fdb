"""`gateway evidence AGREEMENT --from --to`: the evidence pack for an agreement's review, as HTML or JSON.

Reading the ledger for it is recorded in the ledger first, like every read of it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from gateway.cli.audit import COUNCIL, record_command, who_option, why_option
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.reviews import EvidenceError, evidence, remember_versions, render_html
from policies import load_agreements


@click.command(
    "evidence",
    help="The evidence for an agreement's review: use per month, fields disclosed and withheld, refusals, "
    "break-glass, restrictions and objections, alerts, and changes to the agreement since the period began.",
)
@click.argument("agreement_id")
@click.option(
    "--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, help="First day (UTC)."
)
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, help="Last day (UTC).")
@click.option("--format", "output", type=click.Choice(["html", "json"]), default="html", show_default=True)
@who_option
@why_option
def evidence_command(
    agreement_id: str,
    start: datetime,
    end: datetime,
    output: str,
    acting_user: str | None,
    case_reference: str | None,
) -> None:
    settings = load_settings()
    agreements = load_agreements(settings.agreements_dir)
    agreement = agreements.get(agreement_id)
    if agreement is None:
        fail(f"no agreement has the id {agreement_id!r} (known: {', '.join(sorted(agreements))})")
    if end < start:
        fail("--to is before --from")
    if start.year < 2000 or end.year > 2100:
        fail("--from and --to are days between 2000 and 2100")

    async def made() -> dict[str, Any]:
        async with open_database(settings) as engine:
            await remember_versions(engine, agreements)
            await record_command(settings, engine, f"evidence {agreement_id}", acting_user, case_reference)
            try:
                return await evidence(engine, agreement, start=start.date(), end=end.date())
            except EvidenceError as refused:
                fail(str(refused))

    pack = run(made)
    if output == "json":
        click.echo(json.dumps(pack, indent=2))
    else:
        click.echo(render_html(pack, council=COUNCIL), nl=False)
