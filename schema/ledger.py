"""The security-audit view: the access ledger as GraphQL, for the council's security team.

Root fields, where the agreement names them: `auditEvents(filter, first, after)`, newest first, and
`disclosures(personId, first, after)`, every disclosure of one person (the council's own person id).
Reading a person's disclosures is itself recorded as a disclosure of that person, so a subject
access report shows who looked.

The records it reads, and the protocol the gateway implements, are in `schema.ledger_records`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from typing import Any, Final

import strawberry

from policies import Agreement
from schema.context import Disclosure, ViewContext
from schema.errors import BadUserInputError
from schema.ledger_records import (
    AuditEventRecord,
    BreakGlassEntry,
    DisclosureRecord,
    EventFilter,
    InvalidCursorError,
    LedgerReader,
    ReviewRefusedError,
)
from schema.types import PageInfo

DEFAULT_PAGE_SIZE: Final = 50
_PERSON_ID: Final = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() also takes '²'
_MAX_PERSON_ID: Final = 2**31 - 1  # the people table's integer ids


# -- GraphQL types -------------------------------------------------------------------------------


@strawberry.enum(description="What happened to a request.")
class AuditOutcome(Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"
    DISCONNECTED = "disconnected"
    ALERT = "alert"  # not a request: an alert for the security team (its errorCode is the kind)


@strawberry.input(description="Every given condition must hold.")
class AuditEventFilter:
    client: str | None = strawberry.field(default=None, description="OAuth client id.")
    agreement: str | None = strawberry.field(default=None, description="Agreement id.")
    outcome: AuditOutcome | None = None
    from_: datetime | None = strawberry.field(default=None, name="from", description="At or after (UTC).")
    to: datetime | None = strawberry.field(default=None, description="Before (UTC).")


@strawberry.type(description="One request to the gateway, allowed or refused.")
class AuditEvent:
    id: strawberry.ID
    time: datetime
    endpoint: str
    outcome: AuditOutcome
    http_status: int
    error_code: str | None
    client_id: str | None
    agreement_id: str | None
    agreement_version: int | None
    purpose: str | None
    lawful_basis: list[str]
    decision_rule: str | None
    acting_user: str | None
    officer_issuer: str | None = strawberry.field(
        description="The partner identity provider that signed the token naming actingUser; "
        "null when the partner asserted the officer in a header."
    )
    case_reference: str | None
    break_glass_reason: str | None
    operation_name: str | None
    document_sha256: str | None
    fields_disclosed: list[str]
    fields_withheld: list[str]
    people_count: int
    client_address: str | None
    latency_ms: float
    trace_id: str | None
    token_jti: str | None
    request_count: int | None = strawberry.field(
        description="A summary of refusals past a rate limit: how many requests it stands for."
    )


@strawberry.type(description="One disclosure of a person: to whom, when, why and which fields.")
class PersonDisclosure:
    event_id: strawberry.ID
    time: datetime
    client_id: str | None
    partner: str | None
    agreement_id: str | None
    agreement_version: int | None
    purpose: str | None
    lawful_basis: list[str]
    fields: list[str]
    acting_user: str | None
    case_reference: str | None


@strawberry.type(
    description="A break-glass window: who opened which person's protected fields, why, and the review."
)
class BreakGlass:
    id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(description="The audit event of the request that opened it.")
    opened_at: datetime
    expires_at: datetime
    client_id: str
    agreement_id: str
    officer: str
    officer_issuer: str
    case_reference: str
    reason: str
    person_id: strawberry.ID = strawberry.field(description="The council's person id.")
    reviewed_at: datetime | None
    reviewer: str | None
    outcome: str | None = strawberry.field(description="justified or escalated; null until reviewed.")
    note: str | None


@strawberry.type
class BreakGlassEdge:
    cursor: str
    node: BreakGlass


@strawberry.type
class BreakGlassConnection:
    edges: list[BreakGlassEdge]
    page_info: PageInfo


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo


@strawberry.type
class PersonDisclosureEdge:
    cursor: str
    node: PersonDisclosure


@strawberry.type
class PersonDisclosureConnection:
    edges: list[PersonDisclosureEdge]
    page_info: PageInfo


# -- the view ------------------------------------------------------------------------------------


def ledger_query(agreement: Agreement) -> type:
    """The Query type of a view over the access ledger, with the root fields the agreement names."""
    maximum = agreement.limits.max_page_size or DEFAULT_PAGE_SIZE
    default = min(DEFAULT_PAGE_SIZE, maximum)
    namespace: dict[str, Any] = {}
    if "auditEvents" in agreement.fields:
        namespace["audit_events"] = strawberry.field(
            resolver=_events_resolver(maximum, default),
            description=f"Audit events, newest first (at most {maximum} per page).",
        )
    if "disclosures" in agreement.fields:
        namespace["disclosures"] = strawberry.field(
            resolver=_disclosures_resolver(maximum, default),
            description="Every disclosure of the person with this council person id, newest first. "
            "Reading them is recorded as a disclosure of that person.",
        )
    if "rightsRequests" in agreement.fields:
        namespace["rights_requests"] = strawberry.field(
            resolver=_rights_resolver(),
            description="The requests of the person with this council person id, newest first: access, "
            "rectification, erasure, restriction, objection. Reading them is recorded as a disclosure of "
            "that person.",
        )
    if "eligibility" in agreement.fields:
        namespace["eligibility"] = strawberry.field(
            resolver=_eligibility_resolver(),
            description="Why the family of the person with this council person id is eligible for the "
            "programme on a day (default: today), or is not: each outcome, the evidence it rests on and who "
            "reported it. Reading it is recorded as a disclosure of that person.",
        )
    if "breakGlass" in agreement.fields:
        namespace["break_glass"] = strawberry.field(
            resolver=_break_glass_resolver(maximum, default),
            description="Break-glass windows, newest first; pending: only those not reviewed yet. "
            "Reading them is recorded as a disclosure of each person they name.",
        )
    return strawberry.type(
        type("Query", (), {"__annotations__": {}, "__module__": __name__, **namespace}),
        name="Query",
        description=f"{agreement.partner}: agreement {agreement.id}, version {agreement.version}. "
        f"Purpose: {agreement.purpose}",
    )


@strawberry.enum(description="What the review of a break-glass found.")
class BreakGlassOutcome(Enum):
    JUSTIFIED = "justified"
    ESCALATED = "escalated"


def ledger_mutation(agreement: Agreement) -> type | None:
    """The Mutation type of a ledger view that names breakGlass: recording a break-glass review."""
    if "breakGlass" not in agreement.fields:
        return None

    async def review_break_glass(
        info: strawberry.Info, id: strawberry.ID, outcome: BreakGlassOutcome, note: str
    ) -> BreakGlass:
        context, reader = _reader(info)
        if not context.acting_user:  # pragma: no cover - the agreement requires an acting user
            raise BadUserInputError("A review needs the reviewer in X-Acting-User.")
        try:
            entry = await reader.review_break_glass(
                str(id), outcome=outcome.value, reviewer=context.acting_user, note=note
            )
        except ReviewRefusedError as refused:
            raise BadUserInputError(str(refused)) from None
        context.disclosures.append(
            Disclosure(
                root=str(info.path.key), person_id=entry.person_id, fields=("breakGlass",), withheld=()
            )
        )
        return _break_glass(entry)

    namespace = {
        "review_break_glass": strawberry.mutation(
            resolver=review_break_glass,
            description="Record the review of a break-glass under the reviewer in X-Acting-User: "
            "justified or escalated, with a note. A break-glass is reviewed once.",
        )
    }
    return strawberry.type(
        type("Mutation", (), {"__annotations__": {}, "__module__": __name__, **namespace}), name="Mutation"
    )


def _reader(info: strawberry.Info) -> tuple[ViewContext, LedgerReader]:
    context = info.context
    if not isinstance(context, ViewContext) or context.ledger is None:  # pragma: no cover - wiring
        raise TypeError("the ledger view was executed without a ledger reader")
    return context, context.ledger


def _page_size(first: int | None, default: int, maximum: int) -> int:
    size = default if first is None else first
    if not 1 <= size <= maximum:
        raise BadUserInputError(f"first must be between 1 and {maximum}.")
    return size


def _events_resolver(maximum: int, default: int) -> Callable[..., Any]:
    async def audit_events(
        info: strawberry.Info,
        filter: AuditEventFilter | None = None,
        first: int | None = default,
        after: str | None = None,
    ) -> AuditEventConnection:
        _, reader = _reader(info)
        given = filter or AuditEventFilter()
        criteria = EventFilter(
            client=given.client,
            agreement=given.agreement,
            outcome=given.outcome.value if given.outcome else None,
            start=given.from_,
            end=given.to,
        )
        try:
            page = await reader.search_events(
                criteria, first=_page_size(first, default, maximum), after=after
            )
        except InvalidCursorError:
            raise BadUserInputError("after must be a cursor returned by this view.") from None
        edges = [AuditEventEdge(cursor=cursor, node=_event(record)) for cursor, record in page.items]
        return AuditEventConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
        )

    return audit_events


def _disclosures_resolver(maximum: int, default: int) -> Callable[..., Any]:
    async def disclosures(
        info: strawberry.Info, person_id: strawberry.ID, first: int | None = default, after: str | None = None
    ) -> PersonDisclosureConnection:
        context, reader = _reader(info)
        if not _PERSON_ID.fullmatch(str(person_id)) or int(person_id) > _MAX_PERSON_ID:
            raise BadUserInputError("personId must be a council person id (digits).")
        internal = int(person_id)
        try:
            page = await reader.disclosures_of(
                internal, first=_page_size(first, default, maximum), after=after
            )
        except InvalidCursorError:
            raise BadUserInputError("after must be a cursor returned by this view.") from None
        context.disclosures.append(
            Disclosure(root=str(info.path.key), person_id=internal, fields=("disclosures",), withheld=())
        )
        edges = [
            PersonDisclosureEdge(cursor=cursor, node=_disclosure(record)) for cursor, record in page.items
        ]
        return PersonDisclosureConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
        )

    return disclosures


@strawberry.type(description="A data subject's request, and what came of it.")
class RightsRequest:
    id: strawberry.ID
    kind: str = strawberry.field(description="access, rectification, erasure, restriction or objection.")
    agreement_id: str | None = strawberry.field(
        description="A restriction or objection: the agreement it is about, or * for every one."
    )
    received_on: date
    requested_by: str = strawberry.field(description="subject or representative.")
    legal_basis: str
    recorded_at: datetime
    recorded_by: str
    status: str = strawberry.field(description="open, in effect, completed, refused or lifted.")
    outcome_note: str | None
    closed_at: datetime | None
    closed_by: str | None


def _rights_resolver() -> Callable[..., Any]:
    async def rights_requests(info: strawberry.Info, person_id: strawberry.ID) -> list[RightsRequest]:
        context, reader = _reader(info)
        if not _PERSON_ID.fullmatch(str(person_id)) or int(person_id) > _MAX_PERSON_ID:
            raise BadUserInputError("personId must be a council person id (digits).")
        internal = int(person_id)
        entries = await reader.rights_requests(internal)
        context.disclosures.append(
            Disclosure(root=str(info.path.key), person_id=internal, fields=("rightsRequests",), withheld=())
        )
        return [
            RightsRequest(
                id=strawberry.ID(e.id), kind=e.kind, agreement_id=e.agreement_id, received_on=e.received_on,
                requested_by=e.requested_by, legal_basis=e.legal_basis, recorded_at=e.recorded_at,
                recorded_by=e.recorded_by, status=e.status, outcome_note=e.outcome_note,
                closed_at=e.closed_at, closed_by=e.closed_by,
            )
            for e in entries
        ]  # fmt: skip

    return rights_requests


def _break_glass_resolver(maximum: int, default: int) -> Callable[..., Any]:
    async def break_glass(
        info: strawberry.Info, pending: bool = False, first: int | None = default, after: str | None = None
    ) -> BreakGlassConnection:
        context, reader = _reader(info)
        try:
            page = await reader.break_glass(
                pending=pending, first=_page_size(first, default, maximum), after=after
            )
        except InvalidCursorError:
            raise BadUserInputError("after must be a cursor returned by this view.") from None
        for _, entry in page.items:
            context.disclosures.append(
                Disclosure(
                    root=str(info.path.key), person_id=entry.person_id, fields=("breakGlass",), withheld=()
                )
            )
        edges = [BreakGlassEdge(cursor=cursor, node=_break_glass(entry)) for cursor, entry in page.items]
        return BreakGlassConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
        )

    return break_glass


def _break_glass(entry: BreakGlassEntry) -> BreakGlass:
    return BreakGlass(
        id=strawberry.ID(entry.id),
        event_id=strawberry.ID(entry.event_id),
        opened_at=entry.opened_at,
        expires_at=entry.expires_at,
        client_id=entry.client_id,
        agreement_id=entry.agreement_id,
        officer=entry.officer,
        officer_issuer=entry.officer_issuer,
        case_reference=entry.case_reference,
        reason=entry.reason,
        person_id=strawberry.ID(str(entry.person_id)),
        reviewed_at=entry.reviewed_at,
        reviewer=entry.reviewer,
        outcome=entry.review_outcome,
        note=entry.review_note,
    )


def _event(record: AuditEventRecord) -> AuditEvent:
    return AuditEvent(
        id=strawberry.ID(record.id),
        time=record.occurred_at,
        endpoint=record.endpoint,
        outcome=AuditOutcome(record.outcome),
        http_status=record.http_status,
        error_code=record.error_code,
        client_id=record.client_id,
        agreement_id=record.agreement_id,
        agreement_version=record.agreement_version,
        purpose=record.purpose,
        lawful_basis=list(record.lawful_basis),
        decision_rule=record.decision_rule,
        acting_user=record.acting_user,
        officer_issuer=record.officer_issuer,
        case_reference=record.case_reference,
        break_glass_reason=record.break_glass_reason,
        operation_name=record.operation_name,
        document_sha256=record.document_sha256,
        fields_disclosed=list(record.fields_disclosed),
        fields_withheld=list(record.fields_withheld),
        people_count=record.people_count,
        client_address=record.client_address,
        latency_ms=record.latency_ms,
        trace_id=record.trace_id,
        token_jti=record.token_jti,
        request_count=record.request_count,
    )


def _disclosure(record: DisclosureRecord) -> PersonDisclosure:
    return PersonDisclosure(
        event_id=strawberry.ID(record.event_id),
        time=record.occurred_at,
        client_id=record.client_id,
        partner=record.partner,
        agreement_id=record.agreement_id,
        agreement_version=record.agreement_version,
        purpose=record.purpose,
        lawful_basis=list(record.lawful_basis),
        fields=list(record.fields),
        acting_user=record.acting_user,
        case_reference=record.case_reference,
    )


# -- why a family is eligible (two-way sharing) ----------------------------------------------------


@strawberry.type(description="One piece of evidence an outcome rests on, and where it came from.")
class EligibilityEvidence:
    indicator: str = strawberry.field(description="An assessed need (need_...) or a partner's indicator.")
    observed_on: date
    source: str = strawberry.field(description="The council's assessment, or the agreement it came under.")
    value: str | None = strawberry.field(description="What was reported: true/false, or a percentage.")
    about_person_id: strawberry.ID | None = strawberry.field(
        description="The council person id it is about; null for the family as the assessor recorded it."
    )
    client_id: str | None
    officer: str | None
    event_id: strawberry.ID | None = strawberry.field(description="The request that reported it.")
    recorded_at: datetime | None


@strawberry.type(description="One outcome of the rule in force, met or not, and on what.")
class EligibilityOutcome:
    outcome: str
    met: bool
    since: date | None
    evidence: list[EligibilityEvidence]
    conflicts: list[EligibilityEvidence] = strawberry.field(
        description="Reports of one day that disagree: kept, and not counted."
    )


@strawberry.type(description="Days from `from` up to, not including, `until` (null: no end foreseen).")
class EligibilityPeriod:
    from_: date = strawberry.field(name="from")
    until: date | None


@strawberry.type(description="Why a person's family is eligible for the programme on a day, or is not.")
class EligibilityExplanation:
    person_id: strawberry.ID
    day: date
    rule: str = strawberry.field(description="The rule in force on the day (policies/eligibility/).")
    eligible: bool
    since: date | None
    outcomes_met: int
    outcomes_needed: int
    outcomes: list[EligibilityOutcome]
    assessed_on: date | None = strawberry.field(description="The family's assessment, if any.")
    assessor_recorded_eligible: bool | None = strawberry.field(
        description="The assessor's own result, kept as recorded (the populations take either)."
    )
    eligible_periods: list[EligibilityPeriod]
    pending_reports: int = strawberry.field(description="Reports still waiting for their request's event.")


def _evidence(item: dict[str, Any]) -> EligibilityEvidence:
    value = item.get("value")
    return EligibilityEvidence(
        indicator=item["indicator"],
        observed_on=date.fromisoformat(item["observed_on"]),
        source=item["source"],
        value=None if value is None else str(value).lower() if isinstance(value, bool) else str(value),
        about_person_id=None if item["about_person"] is None else strawberry.ID(str(item["about_person"])),
        client_id=item.get("client"),
        officer=item.get("officer"),
        event_id=strawberry.ID(item["event"]) if item.get("event") else None,
        recorded_at=datetime.fromisoformat(item["recorded_at"]) if item.get("recorded_at") else None,
    )


def _eligibility_resolver() -> Callable[..., Any]:
    async def eligibility(
        info: strawberry.Info, person_id: strawberry.ID, on: date | None = None
    ) -> EligibilityExplanation | None:
        context, reader = _reader(info)
        if not _PERSON_ID.fullmatch(str(person_id)) or int(person_id) > _MAX_PERSON_ID:
            raise BadUserInputError("personId must be a council person id (digits).")
        internal = int(person_id)
        assert context.decision.scope is not None
        day = on or context.decision.scope.today
        made = await reader.eligibility(internal, day)
        if made is None:
            return None
        context.disclosures.append(
            Disclosure(root=str(info.path.key), person_id=internal, fields=("eligibility",), withheld=())
        )
        assessor = made["assessor"]
        return EligibilityExplanation(
            person_id=strawberry.ID(str(internal)),
            day=day,
            rule=made["rule"]["id"],
            eligible=made["eligible"],
            since=date.fromisoformat(made["since"]) if made["since"] else None,
            outcomes_met=made["outcomes_met"],
            outcomes_needed=made["rule"]["outcomes_needed"],
            outcomes=[
                EligibilityOutcome(
                    outcome=o["outcome"],
                    met=o["met"],
                    since=date.fromisoformat(o["since"]) if o["since"] else None,
                    evidence=[_evidence(e) for e in o["evidence"]],
                    conflicts=[_evidence(e) for e in o["conflicts"]],
                )
                for o in made["outcomes"]
            ],
            assessed_on=date.fromisoformat(assessor["assessed_on"]) if assessor else None,
            assessor_recorded_eligible=assessor["recorded_eligible"] if assessor else None,
            eligible_periods=[
                EligibilityPeriod(
                    from_=date.fromisoformat(p["from"]),
                    until=date.fromisoformat(p["until"]) if p["until"] else None,
                )
                for p in made["eligible_periods"]
            ],
            pending_reports=made["pending_reports"],
        )

    return eligibility
