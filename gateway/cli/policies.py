"""`gateway policies check`: the data-sharing agreements, validated, and whether each is in force."""

from __future__ import annotations

import click

from gateway.cli.support import fail, load_settings
from gateway.config import council_today
from policies import AgreementFileError, PurposeContext, evaluate, load_agreements


@click.group(help="Data-sharing agreements.")
def policies() -> None:
    pass


@policies.command("check", help="Validate every agreement file and show whether it is in force today.")
def policies_check() -> None:
    settings = load_settings()
    try:
        agreements = load_agreements(settings.agreements_dir)
    except AgreementFileError as error:
        fail(str(error))
    today = council_today()
    for agreement in agreements.values():
        decision = evaluate(
            agreement, PurposeContext(acting_user="check", case_reference="check"), today=today
        )
        state = "in force" if decision.allowed else f"refused today: {decision.code}"
        click.echo(
            f"ok {agreement.label:<24} {agreement.partner}: {len(agreement.fields)} fields, "
            f"population {agreement.population}; {state}"
        )
