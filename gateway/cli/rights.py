"""`gateway rights record|list|close|lift`: data subjects' requests, recorded as they are made.

A restriction or an objection takes effect on the next request to the gateway and lasts until it is
lifted. Every change is written to the ledger first (under the security-audit agreement, naming who
ran the command and the request's id), then made: no change without its event.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import click
from sqlalchemy import select

from gateway.audit import LedgerQueries
from gateway.cli.audit import record_command, who_option, why_option
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import council_today
from gateway.oauth.clients import clients
from gateway.rights import (
    CLOSED_OUTCOMES,
    KINDS,
    REQUESTERS,
    Recipient,
    RightsError,
    RightsRequest,
    check_close,
    check_new,
    close,
    get,
    list_requests,
    notify,
    past_recipients,
    record,
)
from policies import FIELDS_BY_NAME, load_agreements
from policies.fields import DERIVED_FIELDS

T = TypeVar("T")


@click.group(help="Data subjects' requests: access, rectification, erasure, restriction, objection.")
def rights() -> None:
    pass


@rights.command("record", help="Record a request about one person (by the council's internal id).")
@click.argument("person_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option(
    "--agreement", "agreement_id", default=None,
    help="Restriction or objection: the agreement it is about, or '*' for every one.",
)  # fmt: skip
@click.option("--basis", "legal_basis", required=True, help="The legal basis, e.g. 'UK GDPR Art 18(1)(a)'.")
@click.option(
    "--received", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
    help="The day the request was received (default: today).",
)  # fmt: skip
@click.option("--by", "requested_by", type=click.Choice(REQUESTERS), default="subject", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def rights_record(
    person_id: int,
    kind: str,
    agreement_id: str | None,
    legal_basis: str,
    received: datetime | None,
    requested_by: str,
    as_json: bool,
    acting_user: str | None,
    case_reference: str | None,
) -> None:
    settings = load_settings()
    agreements = load_agreements(settings.agreements_dir)
    today = council_today()
    operator = acting_user or getpass.getuser()

    async def made() -> tuple[RightsRequest, tuple[str, ...]]:
        async with open_database(settings) as engine:
            async with engine.connect() as conn:
                new = await check_new(
                    conn, person_id=person_id, kind=kind, agreement_id=agreement_id,
                    received_on=received.date() if received else today, requested_by=requested_by,
                    legal_basis=legal_basis, recorded_by=operator, agreements=agreements, today=today,
                )  # fmt: skip
            # The event first: a change the ledger cannot hold is not made.
            await record_command(
                settings, engine, f"rights record {kind} {new.id}", acting_user, case_reference
            )
            async with engine.begin() as conn:
                return await record(conn, new, today=today), new.not_honoured_by

    request, not_honoured = run(_refusing(made))
    _show(request, as_json)
    if not_honoured and not as_json:
        click.echo(
            f"note: not honoured by {', '.join(not_honoured)} (a legal gateway): the objection is recorded "
            "and does not change that view"
        )


@rights.command("list", help="Requests, newest first.")
@click.option("--person", "person_id", type=click.IntRange(1, 2**31 - 1), default=None)
@click.option(
    "--current", is_flag=True, help="Only open requests, and restrictions and objections in effect."
)
@click.option("--json", "as_json", is_flag=True)
@who_option
@why_option
def rights_list(
    person_id: int | None, current: bool, as_json: bool, acting_user: str | None, case_reference: str | None
) -> None:
    settings = load_settings()

    async def read() -> list[RightsRequest]:
        async with open_database(settings) as engine:
            async with engine.connect() as conn:
                found = await list_requests(conn, person_id=person_id, current_only=current)
            await record_command(settings, engine, "rights list", acting_user, case_reference)
            return found

    found = run(read)
    if as_json:
        click.echo(json.dumps([request.as_json() for request in found], indent=2))
        return
    for request in found:
        _show(request, False)


@rights.command(
    "close",
    help="Close an access, rectification or erasure request with its outcome. A rectification or erasure "
    "completed tells every past recipient of the fields affected, in its own view (UK GDPR Art 19).",
)
@click.argument("request_id")
@click.option("--outcome", type=click.Choice(CLOSED_OUTCOMES), required=True)
@click.option("--note", required=True)
@click.option(
    "--changed", default=None,
    help="A rectification completed: the view fields corrected, comma-separated (givenName,postcode).",
)  # fmt: skip
@who_option
@why_option
def rights_close(
    request_id: str,
    outcome: str,
    note: str,
    changed: str | None,
    acting_user: str | None,
    case_reference: str | None,
) -> None:
    _finish(request_id, outcome, note, acting_user, case_reference, changed=changed)


@rights.command(
    "lift", help="Lift a restriction or an objection: the person is back in view on the next request."
)
@click.argument("request_id")
@click.option("--note", required=True)
@who_option
@why_option
def rights_lift(request_id: str, note: str, acting_user: str | None, case_reference: str | None) -> None:
    _finish(request_id, None, note, acting_user, case_reference)


def _finish(
    request_id: str,
    outcome: str | None,
    note: str,
    acting_user: str | None,
    case_reference: str | None,
    *,
    changed: str | None = None,
) -> None:
    settings = load_settings()
    agreements = load_agreements(settings.agreements_dir)
    operator = acting_user or getpass.getuser()
    if len(request_id) != 32 or any(c not in "0123456789abcdef" for c in request_id):
        fail("no request has this id (UNKNOWN_REQUEST)")

    async def finished() -> tuple[RightsRequest, list[Recipient], set[str]]:
        async with open_database(settings) as engine:
            async with engine.connect() as conn:
                found = await get(conn, request_id)
            check_close(found, outcome=outcome, note=note, closed_by=operator)
            telling, fields = _changed_fields(found, outcome, changed)
            recipients: list[Recipient] = []
            if telling:
                received = await LedgerQueries(engine, agreements).received_by(found.person_id)
                recipients = past_recipients(received, changed=fields, agreements=agreements)
            verb = f"close {outcome}" if outcome else "lift"
            await record_command(settings, engine, f"rights {verb} {request_id}", acting_user, case_reference)
            async with engine.begin() as conn:
                closed = await close(conn, request_id, outcome=outcome, note=note, closed_by=operator)
                await notify(
                    conn, recipients, person_id=found.person_id, kind=found.kind, request_id=request_id
                )
                disabled = {
                    row.client_id
                    for row in await conn.execute(
                        select(clients.c.client_id).where(
                            clients.c.client_id.in_([r.client_id for r in recipients]),
                            clients.c.disabled_at.is_not(None),
                        )
                    )
                }
            return closed, recipients, disabled

    closed, recipients, disabled = run(_refusing(finished))
    _show(closed, False)
    for recipient in recipients:
        received = ", ".join(recipient.fields)
        # A disabled client cannot read its feed: the council tells that partner another way.
        unread = (
            " (its client is disabled: tell the partner another way)"
            if recipient.client_id in disabled
            else ""
        )
        click.echo(
            f"notified: {recipient.client_id} ({recipient.agreement_id}), which received {received}{unread}"
        )
    if closed.kind in ("rectification", "erasure") and closed.status == "completed" and not recipients:
        click.echo("notified: nobody (no partner received the fields affected)")


def _changed_fields(
    found: RightsRequest, outcome: str | None, changed: str | None
) -> tuple[bool, tuple[str, ...] | None]:
    """Whether closing tells past recipients (a rectification or erasure completed), and what changed:
    the fields named (a rectification) or every field (None: an erasure)."""
    telling = outcome == "completed" and found.kind in ("rectification", "erasure")
    if changed is not None and not (telling and found.kind == "rectification"):
        raise RightsError(
            "BAD_INPUT", "--changed names what a completed rectification corrected, and only that"
        )
    if not telling or found.kind == "erasure":
        return telling, None
    names = tuple(dict.fromkeys(name.strip() for name in (changed or "").split(",") if name.strip()))
    # The record's own fields: a derived value (an age band) is corrected by correcting its source.
    correctable = [name for name in FIELDS_BY_NAME if name not in DERIVED_FIELDS]
    if not names or any(name not in correctable for name in names):
        raise RightsError(
            "BAD_INPUT", f"--changed names the view fields corrected, from: {', '.join(correctable)}"
        )
    return True, names


def _refusing(step: Callable[[], Coroutine[Any, Any, T]]) -> Callable[[], Coroutine[Any, Any, T]]:
    """A RightsError as one line with its code, the way every command fails."""

    async def guarded() -> T:
        try:
            return await step()
        except RightsError as refused:
            fail(f"{refused} ({refused.code})")

    return guarded


def _show(request: RightsRequest, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(request.as_json(), indent=2))
        return
    scope = f" {request.agreement_id}" if request.agreement_id else ""
    click.echo(
        f"{request.id}  person {request.person_id}  {request.kind}{scope}  {request.status}  "
        f"received {request.received_on.isoformat()} from the {request.requested_by}  "
        f"recorded by {request.recorded_by}"
    )
