"""`gateway policies check`: the data-sharing agreements, validated, and their register.

The register is what a data protection officer keeps: for each agreement its id and version, partner,
purpose, lawful basis, validity, review date, fields, how the partner's system authenticates and
binds its tokens, and how its officers are named, and whether it is in force on the day. An agreement
that ends or falls due for review within 30 days is warned of; one out of force gets no tokens.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Final

import click

from gateway.cli.support import fail, load_settings
from gateway.config import council_today
from policies import Agreement, AgreementFileError, load_agreements, out_of_force

WARN_AHEAD: Final = 30  # days


@click.group(help="Data-sharing agreements.")
def policies() -> None:
    pass


@policies.command(
    "check", help="Validate every agreement file and print the register, with warnings 30 days ahead."
)
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Judge on this day.")
@click.option("--json", "as_json", is_flag=True)
def policies_check(today: datetime | None, as_json: bool) -> None:
    settings = load_settings()
    try:
        agreements = load_agreements(settings.agreements_dir)
    except AgreementFileError as error:
        fail(str(error))
    day = today.date() if today else council_today()
    register = [_entry(agreement, day) for agreement in agreements.values()]
    if as_json:
        click.echo(json.dumps(register, indent=2))
    else:
        for entry in register:
            click.echo(_text(entry))
    for entry in register:
        for warning in entry["warnings"]:
            click.echo(f"warning: {entry['agreement']}: {warning}", err=True)


def _entry(agreement: Agreement, day: date) -> dict[str, Any]:
    refused = out_of_force(agreement, today=day)
    access = agreement.access
    warnings = []
    for what, when in (("ends", agreement.effective.until), ("falls due for review", agreement.review_due)):
        left = (when - day).days
        if 0 <= left <= WARN_AHEAD:
            warnings.append(f"{what} on {when.isoformat()}, in {left} days")
    if refused is not None:
        warnings.append(f"not in force: {refused.code}")
    return {
        "agreement": agreement.label,
        "id": agreement.id,
        "version": agreement.version,
        "partner": agreement.partner,
        "purpose": agreement.purpose,
        "lawful_basis": list(agreement.lawful_basis),
        "effective": {
            "from": agreement.effective.start.isoformat(),
            "until": agreement.effective.until.isoformat(),
        },
        "review_due": agreement.review_due.isoformat(),
        "fields": list(agreement.fields),
        "client_authentication": list(access.client_authentication),
        "token_binding": access.token_binding,
        "acting_user": access.acting_user,
        "officer_issuers": [issuer.issuer for issuer in access.officer_issuers],
        "documents": access.documents,
        "limits": {
            key: value
            for key, value in (
                ("max_page_size", agreement.limits.max_page_size),
                ("people_per_request", agreement.limits.people_per_request),
                ("people_per_day", agreement.limits.people_per_day),
                ("requests_per_second", agreement.limits.requests_per_second),
                ("requests_per_minute", agreement.limits.requests_per_minute),
            )
            if value is not None
        },
        "in_force": refused is None,
        "state": "in force" if refused is None else f"refused: {refused.code}",
        "warnings": warnings,
    }


def _text(entry: dict[str, Any]) -> str:
    officer = entry["acting_user"]
    if entry["officer_issuers"]:
        officer += f" by {', '.join(entry['officer_issuers'])}"
    binding = {"dpop": "DPoP-bound tokens", "bearer": "bearer tokens"}[entry["token_binding"]]
    effective = entry["effective"]
    rows = [
        ("purpose", entry["purpose"]),
        ("lawful basis", "; ".join(entry["lawful_basis"])),
        ("valid", f"{effective['from']} to {effective['until']}; review due {entry['review_due']}"),
        ("fields", ", ".join(entry["fields"])),
        ("partner system", f"{', '.join(entry['client_authentication'])}; {binding}"),
        ("acting user", officer),
        ("documents", "registered documents only" if entry["documents"] == "trusted" else "any"),
        ("limits", ", ".join(f"{k} {v}" for k, v in entry["limits"].items()) or "the gateway's defaults"),
        ("state", entry["state"]),
    ]
    lines = [f"ok {entry['agreement']:<24} {entry['partner']}"]
    lines += [f"   {label + ':':<16}{value}" for label, value in rows]
    return "\n".join(lines)
