"""`gateway referrals list|decide`: partners' referrals of people the council may not yet know.

A referral is matched once its request's event is written (resolvers.referrals): to the one person it is,
to a record opened for someone new, or left for review when the match is uncertain. `list` shows them
(who sent them, when, what became of them; `--state review` for the officer's queue); `decide` settles one
under review: `--person ID` (it is that person) or `--new` (someone the council did not know). Each command
writes its event first; a decision names the person it links, and one that opens a record takes the record's
ids, writes a second event naming the person about to be opened, and only then opens it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from gateway.cli.audit import record_command, who_option, why_option
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import council_today
from resolvers.models import LINKED, MATCHED, OPENED, PENDING_REFERRAL, REVIEW
from resolvers.referrals import (
    ReferralDecisionError,
    decide,
    in_review,
    list_referrals,
    reserve_ids,
    serialise,
)

STATES = (PENDING_REFERRAL, MATCHED, OPENED, REVIEW, LINKED)


@click.group(help="Partners' referrals of people the council may not yet know: list, decide.")
def referrals() -> None:
    pass


@referrals.command("list", help="Referrals received, oldest first, with what became of each.")
@click.option("--state", "states", type=click.Choice(STATES), multiple=True, help="Only these (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def list_command(
    states: tuple[str, ...], as_json: bool, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()

    async def read() -> list[dict[str, Any]]:
        async with open_database(settings) as engine:
            async with engine.connect() as conn:
                found = await list_referrals(conn, states=states)
            # The read names the people the referrals are linked to, like any read of their records.
            # The read names the people linked to, and those a referral in review might be.
            shown = {r["person_id"] for r in found if r["person_id"]}
            shown |= {int(i) for r in found for i in (r["candidates"] or "").split(",") if i}
            named = tuple((person, ("referral",)) for person in sorted(shown))
            await record_command(
                settings, engine, "referrals list", acting_user, case_reference, disclosures=named
            )
            return found

    found = run(read)
    if as_json:
        click.echo(json.dumps([_public(r) for r in found], indent=2))
        return
    if not found:
        click.echo("no referrals")
    for r in found:
        click.echo(_line(r))


@referrals.command("decide", help="Settle a referral under review: it is --person ID, or --new.")
@click.argument("referral_id")
@click.option("--person", "person_id", type=click.IntRange(1, 2**31 - 1), default=None)
@click.option("--new", "is_new", is_flag=True, help="Someone the council did not know: open a record.")
@who_option
@why_option
def decide_command(
    referral_id: str, person_id: int | None, is_new: bool, acting_user: str | None, case_reference: str | None
) -> None:
    if (person_id is None) == (not is_new):
        fail("say either --person ID or --new (BAD_INPUT)")
    settings = load_settings()

    async def decided() -> tuple[str, int]:
        async with open_database(settings) as engine:
            named = ((person_id, ("referral",)),) if person_id else ()
            await record_command(
                settings, engine, f"referrals decide {referral_id[:32]}", acting_user, case_reference,
                disclosures=named,
            )  # fmt: skip
            try:
                reserved = None
                if person_id is None:
                    # The record to be opened takes its ids first, so that an event names it before it exists.
                    async with engine.begin() as conn:
                        await serialise(conn)  # as a matcher would: no two take the same ids
                        await in_review(conn, referral_id)
                        reserved = await reserve_ids(conn)
                    await record_command(
                        settings, engine, f"referrals decide {referral_id[:32]}: opens person {reserved[2]}",
                        acting_user, case_reference, disclosures=((reserved[2], ("referral",)),),
                    )  # fmt: skip
                async with engine.begin() as conn:
                    return await decide(
                        conn, referral_id, person_id=person_id, officer=acting_user or "cli",
                        today=council_today(), reserved=reserved,
                    )  # fmt: skip
            except ReferralDecisionError as refused:
                fail(f"{refused} ({refused.code})")

    state, person = run(decided)
    click.echo(f"referral {referral_id}: {state} to person {person}")


def _public(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"], "kind": r["kind"], "state": r["state"], "person_id": r["person_id"],
        "candidates": [int(i) for i in (r["candidates"] or "").split(",") if i],
        "given_name": r["given_name"], "family_name": r["family_name"],
        "date_of_birth": r["date_of_birth"].isoformat(), "address_line1": r["address_line1"],
        "town": r["town"], "postcode": r["postcode"], "client_id": r["client_id"],
        "agreement_id": r["agreement_id"], "acting_user": r["acting_user"], "event_id": r["event_id"],
        "received_at": r["recorded_at"].isoformat(), "decided_by": r["decided_by"],
    }  # fmt: skip


def _line(r: dict[str, Any]) -> str:
    p = _public(r)
    who = f"person {p['person_id']}" if p["person_id"] else ""
    if p["state"] == REVIEW:
        who = "might be person " + ", ".join(str(i) for i in p["candidates"])
    return (
        f"{p['id']}  {p['received_at'][:10]}  {p['state']:<7}  {p['client_id']}  "
        f"{p['given_name']} {p['family_name']}, born {p['date_of_birth']}, {p['postcode']}  {who}".rstrip()
    )
