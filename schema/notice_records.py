"""What a partner's view reads of the notifications addressed to it (UK GDPR Art 19), as plain records.

The notifications belong to the gateway; this layer declares what it needs (`NoticeReader`) and the
gateway passes an implementation in through the request's `ViewContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schema.ledger_records import LedgerPage


class UnknownNoticeError(Exception):
    """No notification with this id is addressed to this client."""


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    id: str
    person_id: int  # internal: the view turns it into the partner's own ref
    kind: str  # rectification | erasure
    fields: tuple[str, ...]  # the view fields affected that this client received
    created_at: datetime
    acknowledged_at: datetime | None


class NoticeReader(Protocol):
    async def notices(
        self, *, client_id: str, agreement_id: str, first: int, after: str | None
    ) -> LedgerPage[NoticeRecord]: ...

    async def acknowledge(self, *, client_id: str, agreement_id: str, notice_id: str) -> NoticeRecord: ...
