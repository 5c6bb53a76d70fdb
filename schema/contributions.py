"""The mutations by which a partner reports what it knows about a person in its view (two-way sharing).

Present only in the views of agreements that name them (`contributes:`): the police report proven
offences and anti-social behaviour interventions, the DWP whether a person receives out-of-work benefits.
The person is named by the partner's own ref; a ref this view did not issue, or for someone no longer in
it, is refused exactly alike. Every report carries an idempotency key: a retry gets the first answer, the
same key for a different report is refused. The report is recorded with its provenance (client,
agreement, officer, request) and takes effect once the request's audit event is written; the event names
the person, as a disclosure does. It never changes the council's own facts: a report that disagrees with
another of the same day is kept beside it, and neither counts.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any, Final

import strawberry

from policies import Agreement
from policies.contributions import CONTRIBUTIONS, ContributionSpec
from resolvers import RefKind, get_person
from resolvers.referrals import NewReferral, StoredReferral
from schema.context import Disclosure, ViewContext
from schema.contribution_records import ContributionRecord, IdempotencyKeyReusedError, NewContribution
from schema.errors import BadUserInputError, ViewError

FIELD: Final = "contribution"  # what the ledger records of the person a report is about
EARLIEST: Final = datetime.date(2000, 1, 1)
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,200}$")
_TERM = re.compile(r"^(?P<year>20[0-9]{2})-(?P<season>autumn|spring|summer)$")
_TERM_ENDS: Final = {"autumn": (12, 31), "spring": (4, 30), "summer": (7, 31)}


# Names: letters of any script with their combining marks (the vowel signs of Devanagari, Bengali, Tamil),
# and the spaces, hyphens, apostrophes and full stops names have; a letter first.
_NAME_PUNCTUATION = frozenset(" '\u2019.-")
# An address line or town: letters, digits, spaces and the punctuation addresses have; no control characters.
_LINE = re.compile(r"^[\w ,.'\u2019/&()-]+$")
_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}$")
_REFERRAL_MAX_AGE_YEARS: Final = 3


class IdempotencyKeyReusedInputError(ViewError):
    code = "IDEMPOTENCY_KEY_REUSED"


@strawberry.type(description="A report this client made about a person, as the council recorded it.")
class Contribution:
    id: strawberry.ID
    ref: strawberry.ID = strawberry.field(description="The person, by the ref your view gave you.")
    indicator: str
    observed_on: datetime.date = strawberry.field(description="The day the report is about.")
    recorded_at: datetime.datetime
    conflicting: bool = strawberry.field(
        description="Another report of the same day says otherwise: both are kept, neither counts."
    )
    retried: bool = strawberry.field(description="This key was used before: this is the first answer.")


@strawberry.type(
    description="A referral the council received. It says nothing of whether the council knew the person."
)
class Referral:
    id: strawberry.ID
    received_at: datetime.datetime
    retried: bool = strawberry.field(description="This key was used before: this is the first answer.")


def contribution_mutations(agreement: Agreement) -> dict[str, Any]:
    """The agreement's contribution mutations, as fields of the view's Mutation type."""
    return {_attribute(name): _mutation(CONTRIBUTIONS[name]) for name in agreement.contributes}


def _attribute(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _mutation(spec: ContributionSpec) -> Any:
    if spec.values == "date":

        async def on_a_day(
            info: strawberry.Info, ref: strawberry.ID, date: datetime.date, idempotency_key: str
        ) -> Contribution:
            return await _report(info, spec, ref, date, None, None, None, idempotency_key)

        resolver: Callable[..., Any] = on_a_day
    elif spec.values == "flag":

        async def as_of(
            info: strawberry.Info, ref: strawberry.ID, out_of_work_benefits: bool, as_of: datetime.date,
            idempotency_key: str,
        ) -> Contribution:  # fmt: skip
            return await _report(info, spec, ref, as_of, out_of_work_benefits, None, None, idempotency_key)

        resolver = as_of
    elif spec.values == "term":

        async def for_a_term(
            info: strawberry.Info, ref: strawberry.ID, term: str, percent: float, idempotency_key: str
        ) -> Contribution:
            return await _report(info, spec, ref, _term_end(term), None, percent, term, idempotency_key)

        resolver = for_a_term
    else:

        async def referral(
            info: strawberry.Info, given_name: str, family_name: str, date_of_birth: datetime.date,
            address_line1: str, town: str, postcode: str, idempotency_key: str,
        ) -> Referral:  # fmt: skip
            made = await refer(
                _context(info), spec, given_name=given_name, family_name=family_name,
                date_of_birth=date_of_birth, address_line1=address_line1, town=town, postcode=postcode,
                idempotency_key=idempotency_key,
            )  # fmt: skip
            return Referral(id=strawberry.ID(made.id), received_at=made.recorded_at, retried=made.retried)

        resolver = referral
    return strawberry.mutation(resolver=resolver, name=spec.name, description=spec.description)


def _context(info: strawberry.Info) -> ViewContext:
    context = info.context
    if not isinstance(context, ViewContext) or context.contributions is None:  # pragma: no cover
        raise TypeError("the view was executed without a contribution writer")
    return context


def _term_end(term: str) -> datetime.date:
    found = _TERM.match(term)
    if found is None:
        raise BadUserInputError("term must be a year and a season, such as 2026-autumn.")
    month, day = _TERM_ENDS[found["season"]]
    return datetime.date(int(found["year"]), month, day)


async def _report(
    info: strawberry.Info,
    spec: ContributionSpec,
    ref: str,
    observed_on: datetime.date,
    flag: bool | None,
    percent: float | None,
    term: str | None,
    idempotency_key: str,
) -> Contribution:
    context = _context(info)
    record = await report(
        context, spec, str(info.path.key), ref=ref, observed_on=observed_on, flag=flag, percent=percent,
        term=term, idempotency_key=idempotency_key,
    )  # fmt: skip
    return _contribution(context, record)


async def report(
    context: ViewContext,
    spec: ContributionSpec,
    root: str,
    *,
    ref: str,
    observed_on: datetime.date,
    flag: bool | None,
    percent: float | None,
    term: str | None,
    idempotency_key: str,
) -> ContributionRecord:
    """Validate and record one report (a mutation's, or a batch row's), named in the request's event under
    `root`: the disclosure of the person the ref names."""
    assert context.contributions is not None
    decision = context.decision
    assert decision.scope is not None and decision.agreement_id is not None
    today = decision.scope.today
    _check_key(idempotency_key)
    if not EARLIEST <= observed_on <= today:
        raise BadUserInputError(f"The day reported must be between {EARLIEST.isoformat()} and today.")
    if percent is not None and not 0 <= percent <= 100:
        raise BadUserInputError("percent must be between 0 and 100.")
    person_id = context.refs.decode(RefKind.PERSON, str(ref))
    if person_id is not None:
        async with context.connect() as conn:
            if await get_person(conn, decision=decision, fields=(), person_id=person_id) is None:
                person_id = None
    if person_id is None:
        # A ref this view never issued and one for a person no longer in it: refused alike.
        raise BadUserInputError("No person with this ref is in your view.")
    what = [
        spec.name,
        person_id,
        observed_on.isoformat(),
        flag,
        None if percent is None else round(percent, 2),
        term,
    ]
    new = NewContribution(
        person_id=person_id, indicator=spec.indicator, observed_on=observed_on, flag=flag,
        percent=None if percent is None else round(percent, 2), term=term, idempotency_key=idempotency_key,
        fingerprint=_fingerprint(what),
    )  # fmt: skip
    try:
        record = await context.contributions.report(new, **_provenance(context))
    except IdempotencyKeyReusedError:
        raise IdempotencyKeyReusedInputError("This idempotencyKey was used for a different report.") from None
    context.disclosures.append(
        Disclosure(root=root, person_id=record.person_id, fields=(FIELD,), withheld=())
    )
    context.awaiting_event = True
    return record


async def refer(
    context: ViewContext,
    spec: ContributionSpec,
    *,
    given_name: str,
    family_name: str,
    date_of_birth: datetime.date,
    address_line1: str,
    town: str,
    postcode: str,
    idempotency_key: str,
) -> StoredReferral:
    """Validate and record one referral. Whether the council knows the person is decided once the request's
    event is written, and never told: every accepted referral is answered alike, and its event names no
    one (the person is matched afterwards; the referral's row holds the event it came in)."""
    assert context.contributions is not None
    assert context.decision.scope is not None
    today = context.decision.scope.today
    _check_key(idempotency_key)
    names = [_text("givenName", given_name, 100, None), _text("familyName", family_name, 100, None)]
    line1, place = _text("addressLine1", address_line1, 200, _LINE), _text("town", town, 100, _LINE)
    code = _postcode(postcode)
    if not _add_years(today, -_REFERRAL_MAX_AGE_YEARS) < date_of_birth <= today:
        raise BadUserInputError(
            f"dateOfBirth must be a child's under {_REFERRAL_MAX_AGE_YEARS}, and not after today."
        )
    what = [spec.name, *names, date_of_birth.isoformat(), line1, place, code]
    new = NewReferral(
        kind=spec.indicator, given_name=names[0], family_name=names[1], date_of_birth=date_of_birth,
        address_line1=line1, town=place, postcode=code, idempotency_key=idempotency_key,
        fingerprint=_fingerprint(what),
    )  # fmt: skip
    try:
        made = await context.contributions.refer(new, **_provenance(context))
    except IdempotencyKeyReusedError:
        raise IdempotencyKeyReusedInputError("This idempotencyKey was used for a different report.") from None
    context.awaiting_event = True
    return made


def _fingerprint(what: list[Any]) -> str:
    """Of what is reported: the same key with another fingerprint is refused."""
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def _provenance(context: ViewContext) -> dict[str, Any]:
    """Who reported, under which agreement, for which officer, in which request."""
    assert context.decision.agreement_id is not None
    return {
        "client_id": str(context.client_id), "agreement_id": context.decision.agreement_id,
        "acting_user": context.acting_user, "event_id": str(context.event_id),
    }  # fmt: skip


def _check_key(idempotency_key: str) -> None:
    if not _KEY.match(idempotency_key):
        raise BadUserInputError("idempotencyKey must be 8 to 200 letters, digits, '.', '_', ':' or '-'.")


def _text(name: str, value: str, longest: int, pattern: re.Pattern[str] | None) -> str:
    """Spaces collapsed; refused when empty, too long, or holding what no name (pattern None) or address
    line holds."""
    clean = " ".join(unicodedata.normalize("NFC", value).split())  # é typed as e and an accent is é
    ok = _is_name(clean) if pattern is None else pattern.match(clean) is not None
    if not clean or len(clean) > longest or not ok:
        what = "a name's letters, spaces and punctuation" if pattern is None else "an address's characters"
        raise BadUserInputError(f"{name} must be 1 to {longest} of {what}.")
    return clean


def _is_name(text: str) -> bool:
    return (
        bool(text)
        and text[0].isalpha()
        and all(
            c.isalpha() or unicodedata.category(c) in ("Mn", "Mc") or c in _NAME_PUNCTUATION for c in text
        )
    )


def _postcode(value: str) -> str:
    compact = "".join(value.split()).upper()
    if not _POSTCODE.match(compact):
        raise BadUserInputError("postcode must be a UK postcode, such as W10 4CC.")
    return f"{compact[:-3]} {compact[-3:]}"


def _add_years(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _contribution(context: ViewContext, record: ContributionRecord) -> Contribution:
    return Contribution(
        id=strawberry.ID(record.id),
        ref=strawberry.ID(context.refs.encode(RefKind.PERSON, record.person_id)),
        indicator=record.indicator,
        observed_on=record.observed_on,
        recorded_at=record.recorded_at,
        conflicting=record.conflicting,
        retried=record.retried,
    )


# -- a batch's rows: each a report or referral by its mutation's name and arguments ------------------

# The arguments each kind of report takes, by their GraphQL names (a CSV's columns, an NDJSON row's keys).
ROW_ARGUMENTS: Final[dict[str, tuple[str, ...]]] = {
    "date": ("ref", "date"),
    "flag": ("ref", "outOfWorkBenefits", "asOf"),
    "term": ("ref", "term", "percent"),
    "referral": ("givenName", "familyName", "dateOfBirth", "addressLine1", "town", "postcode"),
}
ROW_COLUMNS: Final = (
    "report",
    *dict.fromkeys(a for args in ROW_ARGUMENTS.values() for a in args),
    "idempotencyKey",
)


class UnknownReportError(ViewError):
    code = "UNKNOWN_REPORT"


async def submit_row(
    context: ViewContext, agreement: Agreement, row: dict[str, object], *, default_key: str
) -> tuple[str, int | None]:
    """One row of a batch, as its mutation would take it: the report's or referral's id, and the person
    a report is about (None for a referral). Raises a ViewError with the row's code and message."""
    agreement_reports = agreement.contributes
    name = row.get("report")
    if not isinstance(name, str) or name not in agreement_reports:
        raise UnknownReportError(f"report must be one of your agreement's: {', '.join(agreement_reports)}.")
    spec = CONTRIBUTIONS[name]
    wanted = ROW_ARGUMENTS[spec.values]
    if set(row) - {"report", "idempotencyKey", *wanted}:
        raise BadUserInputError(f"{name} takes {', '.join(wanted)} and idempotencyKey, and nothing else.")
    key = row.get("idempotencyKey", default_key)
    if not isinstance(key, str):
        raise BadUserInputError("idempotencyKey must be text.")
    if spec.values == "referral":
        made = await refer(
            context, spec, given_name=_row_text(row, "givenName"), family_name=_row_text(row, "familyName"),
            date_of_birth=_row_date(row, "dateOfBirth"), address_line1=_row_text(row, "addressLine1"),
            town=_row_text(row, "town"), postcode=_row_text(row, "postcode"), idempotency_key=key,
        )  # fmt: skip
        return made.id, None
    ref = _row_text(row, "ref")
    if spec.values == "date":
        args: dict[str, Any] = {
            "observed_on": _row_date(row, "date"),
            "flag": None,
            "percent": None,
            "term": None,
        }
    elif spec.values == "flag":
        args = {"observed_on": _row_date(row, "asOf"), "flag": _row_flag(row, "outOfWorkBenefits"),
                "percent": None, "term": None}  # fmt: skip
    else:
        term = _row_text(row, "term")
        args = {
            "observed_on": _term_end(term),
            "flag": None,
            "percent": _row_number(row, "percent"),
            "term": term,
        }
    record = await report(context, spec, "batch", ref=ref, idempotency_key=key, **args)
    return record.id, record.person_id


def _row_value(row: dict[str, object], name: str) -> object:
    value = row.get(name)
    if value is None or value == "":
        raise BadUserInputError(f"{name} is required.")
    return value


def _row_text(row: dict[str, object], name: str) -> str:
    value = _row_value(row, name)
    if not isinstance(value, str):
        raise BadUserInputError(f"{name} must be text.")
    return value


def _row_date(row: dict[str, object], name: str) -> datetime.date:
    value = _row_value(row, name)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise BadUserInputError(f"{name} must be a date, such as 2026-10-01.")


def _row_flag(row: dict[str, object], name: str) -> bool:
    value = _row_value(row, name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadUserInputError(f"{name} must be true or false.")


def _row_number(row: dict[str, object], name: str) -> float:
    value = _row_value(row, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,2})?", value):
        return float(value)
    raise BadUserInputError(f"{name} must be a number, such as 87.5.")
