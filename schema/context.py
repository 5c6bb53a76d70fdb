"""What the gateway hands each GraphQL execution, and what the execution hands back.

The gateway builds a `ViewContext` per request. Resolvers read the Decision, the partner's ref
codec and a connection factory from it, and record every person they return in `disclosures`,
keyed by the root field's response key, so the gateway can drop what an error removed from the
response before it writes the audit event.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from policies import Decision
from resolvers import RefCodec
from schema.contribution_records import ContributionWriter
from schema.ledger_records import LedgerReader
from schema.notice_records import NoticeReader


class ConnectionFactory(Protocol):
    def __call__(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


class Disclosure(NamedTuple):
    """A tuple, not a dataclass: a page makes a hundred of them per request."""

    root: str  # response key (alias or name) of the root field whose result holds the person
    person_id: int  # internal id: for the audit ledger only, never serialised to a partner
    fields: tuple[str, ...]  # view fields sent for this person (withheld ones excluded)
    withheld: tuple[str, ...]  # fields asked for but withheld for this person
    member: bool = False  # returned as another person's household member, not as the root's person


@dataclass(slots=True)
class ViewContext:
    decision: Decision
    refs: RefCodec
    connect: ConnectionFactory
    disclosures: list[Disclosure] = field(default_factory=list)
    operation_name: str | None = None  # the operation that ran, once the document is parsed
    ledger: LedgerReader | None = None  # only for views over the access ledger
    acting_user: str | None = None  # who is asking: a review in the ledger view is recorded under it
    client_id: str | None = None  # the verified client: whose notifications a person view reads
    notices: NoticeReader | None = None  # only for views over person records (Art 19 notifications)
    contributions: ContributionWriter | None = None  # only for views whose agreement `contributes`
    event_id: str | None = None  # the request's audit event, known ahead: what a contribution waits for
    awaiting_event: bool = False  # a report or referral was recorded: it counts once the event is written

    def disclosed_in(self, data: dict[str, object] | None) -> list[Disclosure]:
        """Disclosures whose root field reached the response (an error nulls a root field whole)."""
        if not data:
            return []
        return [d for d in self.disclosures if data.get(d.root) is not None]
