"""`notifications(first, after)` and `acknowledgeNotification(id)` in every person view (UK GDPR Art 19).

When the council rectifies or erases a person's data, every past recipient is told: a notification names
the person by the recipient's own ref, the kind of change, the view fields affected that this recipient
received, and when; never the old or the new value. Reading the feed is recorded like any disclosure of
the people it names (field `notifications`); acknowledging one is recorded too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, Final

import strawberry

from resolvers import RefKind
from schema.context import Disclosure, ViewContext
from schema.errors import BadUserInputError
from schema.ledger_records import InvalidCursorError
from schema.notice_records import NoticeReader, NoticeRecord, UnknownNoticeError
from schema.types import PageInfo

FIELD: Final = "notifications"  # as the ledger records what a read of the feed disclosed
MAX_PAGE: Final = 100
DEFAULT_PAGE: Final = 50


@strawberry.enum(description="What the council did to the person's data.")
class NotificationKind(Enum):
    RECTIFICATION = "rectification"
    ERASURE = "erasure"


@strawberry.type(
    description="The council rectified or erased data it had sent you about a person: correct or delete "
    "your copy of the fields named (UK GDPR Art 19). The new value, if any, comes from a new request."
)
class Notification:
    id: strawberry.ID
    ref: strawberry.ID = strawberry.field(description="The person, by the ref this view gave you.")
    kind: NotificationKind
    fields: list[str] = strawberry.field(description="The fields affected that you received.")
    at: datetime
    acknowledged_at: datetime | None


@strawberry.type
class NotificationEdge:
    cursor: str
    node: Notification


@strawberry.type
class NotificationConnection:
    edges: list[NotificationEdge]
    page_info: PageInfo


def _reader(info: strawberry.Info) -> tuple[ViewContext, NoticeReader, str]:
    context = info.context
    if not isinstance(context, ViewContext) or context.notices is None or context.client_id is None:
        raise TypeError("a person view was executed without its notifications")  # pragma: no cover - wiring
    return context, context.notices, context.client_id


def _notification(context: ViewContext, record: NoticeRecord) -> Notification:
    return Notification(
        id=strawberry.ID(record.id),
        ref=strawberry.ID(context.refs.encode(RefKind.PERSON, record.person_id)),
        kind=NotificationKind(record.kind),
        fields=list(record.fields),
        at=record.created_at,
        acknowledged_at=record.acknowledged_at,
    )


def notifications_field() -> Any:
    async def notifications(
        info: strawberry.Info, first: int | None = DEFAULT_PAGE, after: str | None = None
    ) -> NotificationConnection:
        context, reader, client_id = _reader(info)
        size = DEFAULT_PAGE if first is None else first
        if not 1 <= size <= MAX_PAGE:
            raise BadUserInputError(f"first must be between 1 and {MAX_PAGE}.")
        try:
            page = await reader.notices(
                client_id=client_id, agreement_id=str(context.decision.agreement_id), first=size, after=after
            )
        except InvalidCursorError:
            raise BadUserInputError("after must be a cursor returned by this view.") from None
        for _, record in page.items:
            context.disclosures.append(
                Disclosure(root=str(info.path.key), person_id=record.person_id, fields=(FIELD,), withheld=())
            )
        edges = [NotificationEdge(cursor=cursor, node=_notification(context, r)) for cursor, r in page.items]
        return NotificationConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
        )

    return strawberry.field(
        resolver=notifications,
        description="Rectifications and erasures of data this client received, oldest first; pass the "
        "last cursor as `after` to read on from where you stopped.",
    )


def notices_mutation(extra: dict[str, Any] | None = None) -> type:
    """The person views' Mutation type: the acknowledgement, and `extra` (the agreement's contributions)."""

    async def acknowledge_notification(info: strawberry.Info, id: strawberry.ID) -> Notification:
        context, reader, client_id = _reader(info)
        try:
            record = await reader.acknowledge(
                client_id=client_id, agreement_id=str(context.decision.agreement_id), notice_id=str(id)
            )
        except UnknownNoticeError:
            raise BadUserInputError("No notification with this id is addressed to you.") from None
        context.disclosures.append(
            Disclosure(root=str(info.path.key), person_id=record.person_id, fields=(FIELD,), withheld=())
        )
        return _notification(context, record)

    namespace: dict[str, Callable[..., Any]] = {
        "acknowledge_notification": strawberry.mutation(
            resolver=acknowledge_notification,
            description="Say that this client has corrected or deleted its copy. Acknowledging again "
            "changes nothing and answers the first acknowledgement.",
        ),
        **(extra or {}),
    }
    return strawberry.type(
        type("Mutation", (), {"__annotations__": {}, "__module__": __name__, **namespace}), name="Mutation"
    )
