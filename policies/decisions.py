"""What the evaluator answers: may this client ask, which fields, which rows, and what must follow.

A `Decision` is plain data. It names the rule that decided, so the audit event can record why a
request was answered or refused, and it carries everything the data layer needs to build SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class DenyCode(StrEnum):
    """Stable codes a partner sees when its request is refused before any data is read."""

    FORBIDDEN = "FORBIDDEN"
    AGREEMENT_NOT_IN_EFFECT = "AGREEMENT_NOT_IN_EFFECT"
    AGREEMENT_EXPIRED = "AGREEMENT_EXPIRED"
    AGREEMENT_REVIEW_OVERDUE = "AGREEMENT_REVIEW_OVERDUE"
    PURPOSE_CONTEXT_REQUIRED = "PURPOSE_CONTEXT_REQUIRED"
    ACTING_USER_NOT_VERIFIED = "ACTING_USER_NOT_VERIFIED"


class Obligation(StrEnum):
    """Duties that come with an allowed decision; the gateway must discharge each one."""

    RECORD_DISCLOSURE = "record_disclosure"
    RECORD_ACTING_USER = "record_acting_user"
    RECORD_CASE_REFERENCE = "record_case_reference"
    ALERT_SECURITY = "alert_security"


class ProtectedAddress(StrEnum):
    """How people with a protected-address marker are treated in this decision."""

    WITHHOLD = "withhold"  # visible, but every location and contact field is null and listed as withheld
    EXCLUDE = "exclude"  # not visible at all


@dataclass(frozen=True, slots=True)
class PurposeContext:
    """Who is asking, on whose behalf and why, as the partner's system states it for one request."""

    acting_user: str | None = None
    case_reference: str | None = None
    break_glass_reason: str | None = None
    # The acting user came from a token the gateway issued in exchange for one signed by the partner's
    # identity provider, not from a header the partner's system wrote.
    acting_user_verified: bool = False


@dataclass(frozen=True, slots=True)
class WithheldField:
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class RowScope:
    """Which rows a decision reaches. Restricted and past-retention people are always out of scope."""

    population: str
    today: date
    objections_of: str | None  # agreement id whose recorded objections remove people from view
    protected_address: ProtectedAddress
    # Under WITHHOLD: people whose protected fields a break-glass window has opened (internal ids; the
    # gateway sets it from its open windows, never the evaluator).
    opened: frozenset[int] = frozenset()
    # The agreement whose restrictions of processing remove people from view (restrictions of every
    # agreement always do).
    restrictions_of: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    reason: str
    agreement_id: str | None
    agreement_version: int | None
    code: DenyCode | None = None
    fields: tuple[str, ...] = ()
    conditionally_withheld: tuple[WithheldField, ...] = ()
    scope: RowScope | None = None
    listing: bool = False
    match: tuple[str, ...] = ()
    max_page_size: int | None = None
    obligations: frozenset[Obligation] = frozenset()
    purpose: str = ""
    lawful_basis: tuple[str, ...] = ()

    @property
    def agreement_label(self) -> str | None:
        if self.agreement_id is None:
            return None
        return f"{self.agreement_id}@{self.agreement_version}"
