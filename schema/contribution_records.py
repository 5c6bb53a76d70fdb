"""What a partner's view needs to record a contribution (two-way sharing), as plain records.

The contributions belong to the gateway; this layer declares what it needs (`ContributionWriter`) and
the gateway passes an implementation in through the request's `ViewContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from resolvers.referrals import NewReferral, StoredReferral


class IdempotencyKeyReusedError(Exception):
    """This client used the idempotency key before, for a different report."""


@dataclass(frozen=True, slots=True)
class NewContribution:
    person_id: int
    indicator: str
    observed_on: date
    flag: bool | None
    percent: float | None
    term: str | None
    idempotency_key: str
    fingerprint: str  # of what is reported: the same key with another fingerprint is refused


@dataclass(frozen=True, slots=True)
class ContributionRecord:
    id: str
    person_id: int  # internal: the view turns it into the partner's own ref
    indicator: str
    observed_on: date
    recorded_at: datetime
    conflicting: bool  # another report of the same indicator, person and day says otherwise
    retried: bool  # the key was seen before: this is the first answer again


class ContributionWriter(Protocol):
    async def report(
        self,
        new: NewContribution,
        *,
        client_id: str,
        agreement_id: str,
        acting_user: str | None,
        event_id: str,
    ) -> ContributionRecord: ...

    async def refer(
        self,
        new: NewReferral,
        *,
        client_id: str,
        agreement_id: str,
        acting_user: str | None,
        event_id: str,
    ) -> StoredReferral: ...
