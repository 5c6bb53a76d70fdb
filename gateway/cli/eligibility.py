"""`gateway eligibility explain|refresh`: why a family is in the programme's cohort, on whose evidence.

`explain` reads the family's evidence (the assessor's needs and partners' recorded reports) and shows,
under the rule in force on the day, each outcome met or not, the evidence it rests on (which partner,
client, officer, request, when), reports that disagree, the assessor's own recorded result beside it,
and when the family is in and out on this evidence. The read names the person in the ledger, first.

`refresh` is for after a rule file changes, or a gateway stopped between writing a request's event and
making its reports evidence: it makes evidence of every pending report whose event is in the ledger,
matches every pending referral whose event is in the ledger (a gateway does both at start-up too), and
works out again every family's timeline that has a report.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from sqlalchemy import select

from gateway.cli.audit import record_command, who_option, why_option
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import council_today
from gateway.sharing import ContributionStore
from policies.eligibility import EligibilityFileError, load_eligibility
from resolvers.eligibility import explain, refresh_households
from resolvers.models import contributions


@click.group(help="Programme eligibility from evidence (policies/eligibility/): explain a family, refresh.")
def eligibility() -> None:
    pass


@eligibility.command(
    "explain", help="Why a person's family is eligible or not: outcomes, evidence, since when."
)
@click.argument("person_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--on", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Default: today.")
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def explain_command(
    person_id: int, day: datetime | None, as_json: bool, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()
    rules = _rules(settings.eligibility_dir)
    judged = day.date() if day else council_today()
    if not any(rule.in_force_on(judged) for rule in rules.values()):
        fail(f"no eligibility rule is in force on {judged.isoformat()}")

    async def read() -> dict[str, Any] | None:
        async with open_database(settings) as engine:
            await record_command(
                settings, engine, "eligibility explain", acting_user, case_reference,
                disclosures=((person_id, ("eligibility",)),),
            )  # fmt: skip
            async with engine.connect() as conn:
                return await explain(conn, person_id, rules, judged)

    made = run(read)
    if made is None:
        fail(f"no person has the id {person_id} (UNKNOWN_PERSON)")
    click.echo(json.dumps(made, indent=2) if as_json else _text(made))


@eligibility.command(
    "refresh",
    help="Make evidence of reports, and match referrals, whose event is written; rework every timeline.",
)
@who_option
@why_option
def refresh_command(acting_user: str | None, case_reference: str | None) -> None:
    settings = load_settings()
    rules = _rules(settings.eligibility_dir)

    async def refreshed() -> tuple[int, int, int]:
        async with open_database(settings) as engine:
            await record_command(settings, engine, "eligibility refresh", acting_user, case_reference)
            recorded, referred = await ContributionStore(engine, rules, council_today).sweep()
            async with engine.begin() as conn:
                households = (
                    (await conn.execute(select(contributions.c.household_id).distinct())).scalars().all()
                )
                await refresh_households(conn, households, rules)
            return recorded, referred, len(households)

    recorded, referred, families = run(refreshed)
    click.echo(
        f"made evidence of {recorded} pending report(s); matched {referred} pending referral(s); "
        f"worked out {families} family timeline(s) again"
    )


def _rules(directory: Any) -> Any:
    try:
        return load_eligibility(directory)
    except EligibilityFileError as error:
        fail(f"GATEWAY_ELIGIBILITY_DIR: {error}")


def _text(made: dict[str, Any]) -> str:
    rule = made["rule"]
    verdict = "eligible" if made["eligible"] else "not eligible"
    since = f" since {made['since']}" if made["since"] else ""
    lines = [
        f"person {made['person_id']} on {made['day']}: {verdict}{since}: {made['outcomes_met']} outcomes "
        f"met, {rule['outcomes_needed']} needed under {rule['id']} ({rule['name']})",
    ]
    for outcome in made["outcomes"]:
        mark = "met" if outcome["met"] else "not met"
        since_o = f" since {outcome['since']}" if outcome["since"] else ""
        lines.append(f"  {outcome['outcome']}: {mark}{since_o}")
        for e in outcome["evidence"]:
            lines.append(f"    on {_evidence(e)}")
        for e in outcome["conflicts"]:
            lines.append(f"    in conflict (not counted): {_evidence(e)}")
    assessor = made["assessor"]
    lines.append(
        "assessor: no assessment"
        if assessor is None
        else f"assessor: assessed on {assessor['assessed_on']}, recorded "
        f"{'eligible' if assessor['recorded_eligible'] else 'not eligible'} (kept as recorded)"
    )
    periods = ", ".join(f"{p['from']} to {p['until'] or 'no end foreseen'}" for p in made["eligible_periods"])
    lines.append(f"eligible on this evidence: {periods or 'never'}")
    if made["pending_reports"]:
        lines.append(f"reports waiting for their request's event (not counted): {made['pending_reports']}")
    return "\n".join(lines)


def _evidence(e: dict[str, Any]) -> str:
    value = f" = {e['value']}" if "value" in e else ""
    who = f" from {e['source']}"
    if "client" in e:
        who += f" (client {e['client']}, officer {e['officer'] or '-'}, request {e['event']})"
    return f"{e['indicator']}{value} dated {e['observed_on']}{who}"
