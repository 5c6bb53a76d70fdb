"""What the security-audit view reads from the access ledger, as plain records.

The ledger's tables belong to the gateway; this layer declares what it needs (`LedgerReader`) and
the gateway passes an implementation in through the request's `ViewContext`.

Exceptions:
    InvalidCursorError   a cursor the reader did not issue
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class InvalidCursorError(Exception):
    pass


class ReviewRefusedError(Exception):
    """A review that cannot be recorded; `str()` says why, safe to send back."""


@dataclass(frozen=True, slots=True)
class AuditEventRecord:
    id: str
    occurred_at: datetime
    endpoint: str
    outcome: str
    http_status: int
    latency_ms: float
    people_count: int
    client_id: str | None
    agreement_id: str | None
    agreement_version: int | None
    purpose: str | None
    lawful_basis: tuple[str, ...]
    decision_rule: str | None
    acting_user: str | None
    officer_issuer: str | None  # who verified acting_user; None: the partner asserted it
    case_reference: str | None
    break_glass_reason: str | None
    operation_name: str | None
    document_sha256: str | None
    fields_disclosed: tuple[str, ...]
    fields_withheld: tuple[str, ...]
    error_code: str | None
    client_address: str | None
    trace_id: str | None
    token_jti: str | None
    request_count: int | None = None  # a summary event: the refused requests it stands for


@dataclass(frozen=True, slots=True)
class DisclosureRecord:
    event_id: str
    occurred_at: datetime
    client_id: str | None
    partner: str | None
    agreement_id: str | None
    agreement_version: int | None
    purpose: str | None
    lawful_basis: tuple[str, ...]
    fields: tuple[str, ...]
    acting_user: str | None
    case_reference: str | None


@dataclass(frozen=True, slots=True)
class BreakGlassEntry:
    """A break-glass window (MASH) and its review."""

    id: str
    event_id: str
    opened_at: datetime
    expires_at: datetime
    client_id: str
    agreement_id: str
    officer: str
    officer_issuer: str
    case_reference: str
    reason: str
    person_id: int  # the council's own id of the person whose fields it opened
    reviewed_at: datetime | None
    reviewer: str | None
    review_outcome: str | None
    review_note: str | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    client: str | None = None
    agreement: str | None = None
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    acting_user: str | None = None  # the officer the event names
    case_reference: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerPage(Generic[T]):
    items: list[tuple[str, T]]  # (cursor, record)
    has_next: bool


@dataclass(frozen=True, slots=True)
class RightsRequestEntry:
    """A data subject's request, as the register keeps it."""

    id: str
    person_id: int  # the council's internal id
    kind: str
    agreement_id: str | None  # a restriction or objection: one agreement, or '*'
    received_on: date
    requested_by: str
    legal_basis: str
    recorded_at: datetime
    recorded_by: str
    status: str
    outcome_note: str | None
    closed_at: datetime | None
    closed_by: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "person_id": self.person_id,
            "kind": self.kind,
            "agreement": self.agreement_id,
            "received_on": self.received_on.isoformat(),
            "requested_by": self.requested_by,
            "legal_basis": self.legal_basis,
            "recorded_at": self.recorded_at.isoformat(),
            "recorded_by": self.recorded_by,
            "status": self.status,
            "outcome_note": self.outcome_note,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "closed_by": self.closed_by,
        }


class LedgerReader(Protocol):
    async def search_events(
        self, criteria: EventFilter, *, first: int, after: str | None
    ) -> LedgerPage[AuditEventRecord]: ...

    async def disclosures_of(
        self, person_id: int, *, first: int, after: str | None
    ) -> LedgerPage[DisclosureRecord]: ...

    async def break_glass(
        self, *, pending: bool, first: int, after: str | None
    ) -> LedgerPage[BreakGlassEntry]: ...

    async def rights_requests(self, person_id: int) -> list[RightsRequestEntry]: ...

    async def eligibility(self, person_id: int, day: date) -> dict[str, Any] | None:
        """Why the person's family is eligible or not on `day` (resolvers.eligibility.explain's shape)."""
        ...

    async def review_break_glass(
        self, break_glass_id: str, *, outcome: str, reviewer: str, note: str
    ) -> BreakGlassEntry: ...
