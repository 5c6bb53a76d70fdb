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
from collections.abc import Callable
from typing import Any, Final

import strawberry

from policies import Agreement
from policies.contributions import CONTRIBUTIONS, ContributionSpec
from resolvers import RefKind, get_person
from schema.context import Disclosure, ViewContext
from schema.contribution_records import ContributionRecord, IdempotencyKeyReusedError, NewContribution
from schema.errors import BadUserInputError, ViewError

FIELD: Final = "contribution"  # what the ledger records of the person a report is about
EARLIEST: Final = datetime.date(2000, 1, 1)
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,200}$")
_TERM = re.compile(r"^(?P<year>20[0-9]{2})-(?P<season>autumn|spring|summer)$")
_TERM_ENDS: Final = {"autumn": (12, 31), "spring": (4, 30), "summer": (7, 31)}


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
    else:

        async def for_a_term(
            info: strawberry.Info, ref: strawberry.ID, term: str, percent: float, idempotency_key: str
        ) -> Contribution:
            return await _report(info, spec, ref, _term_end(term), None, percent, term, idempotency_key)

        resolver = for_a_term
    return strawberry.mutation(resolver=resolver, name=spec.name, description=spec.description)


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
    context = info.context
    if not isinstance(context, ViewContext) or context.contributions is None:  # pragma: no cover
        raise TypeError("the view was executed without a contribution writer")
    decision = context.decision
    assert decision.scope is not None and decision.agreement_id is not None
    today = decision.scope.today
    if not _KEY.match(idempotency_key):
        raise BadUserInputError("idempotencyKey must be 8 to 200 letters, digits, '.', '_', ':' or '-'.")
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
        fingerprint=hashlib.sha256(json.dumps(what).encode()).hexdigest(),
    )  # fmt: skip
    try:
        record = await context.contributions.report(
            new, client_id=str(context.client_id), agreement_id=decision.agreement_id,
            acting_user=context.acting_user, event_id=str(context.event_id),
        )  # fmt: skip
    except IdempotencyKeyReusedError:
        raise IdempotencyKeyReusedInputError("This idempotencyKey was used for a different report.") from None
    context.disclosures.append(
        Disclosure(root=str(info.path.key), person_id=record.person_id, fields=(FIELD,), withheld=())
    )
    return _contribution(context, record)


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
