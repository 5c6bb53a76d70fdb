"""Two-way sharing in the gateway: partners' reports recorded in their requests, and made evidence once
each request's audit event is written (then the families they are about are judged again).

A report waits, pending, for its request's event: if the ledger cannot be written the partner is answered
503 and the report never counts; a retry with the same idempotency key carries it, under the retry's event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db import utc
from policies.eligibility import EligibilityRule
from resolvers.contributions import KeyReusedError, make_evidence, make_written_evidence, store
from resolvers.eligibility import refresh_households
from resolvers.referrals import (
    MATCH_GROUP,
    NewReferral,
    ReferralKeyReusedError,
    StoredReferral,
    match_referrals,
    store_referral,
)
from schema.contribution_records import ContributionRecord, IdempotencyKeyReusedError, NewContribution

log = logging.getLogger(__name__)
EVIDENCE_GROUP: Final = 500  # reports made evidence per transaction


class ContributionStore:
    def __init__(
        self,
        engine: AsyncEngine,
        rules: Mapping[str, EligibilityRule],
        today: Callable[[], date],
        conn: AsyncConnection | None = None,
        matching: set[asyncio.Task[int]] | None = None,
    ) -> None:
        self._engine = engine
        self._rules = rules
        self._today = today
        self._conn = conn
        self._matching: set[asyncio.Task[int]] = set() if matching is None else matching

    def within(self, conn: AsyncConnection) -> ContributionStore:
        """This store recording in the caller's transaction (a batch's chunk: one commit for its rows)."""
        return ContributionStore(self._engine, self._rules, self._today, conn, self._matching)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        if self._conn is not None:
            yield self._conn
            return
        async with self._engine.begin() as conn:
            yield conn

    async def report(
        self,
        new: NewContribution,
        *,
        client_id: str,
        agreement_id: str,
        acting_user: str | None,
        event_id: str,
    ) -> ContributionRecord:
        try:
            async with self._transaction() as conn:
                stored = await store(
                    conn, person_id=new.person_id, indicator=new.indicator, observed_on=new.observed_on,
                    flag=new.flag, percent=new.percent, term=new.term, client_id=client_id,
                    agreement_id=agreement_id, acting_user=acting_user, event_id=event_id,
                    idempotency_key=new.idempotency_key, fingerprint=new.fingerprint,
                )  # fmt: skip
        except KeyReusedError:
            raise IdempotencyKeyReusedError from None
        row = stored.row
        return ContributionRecord(
            id=row["id"], person_id=row["person_id"], indicator=row["indicator"],
            observed_on=row["observed_on"], recorded_at=_aware(row["recorded_at"]),
            conflicting=stored.conflicting, retried=stored.retried,
        )  # fmt: skip

    async def refer(
        self,
        new: NewReferral,
        *,
        client_id: str,
        agreement_id: str,
        acting_user: str | None,
        event_id: str,
    ) -> StoredReferral:
        try:
            async with self._transaction() as conn:
                stored = await store_referral(
                    conn, new, client_id=client_id, agreement_id=agreement_id, acting_user=acting_user,
                    event_id=event_id,
                )  # fmt: skip
        except ReferralKeyReusedError:
            raise IdempotencyKeyReusedError from None
        return replace(stored, recorded_at=_aware(stored.recorded_at))

    async def recorded(self, event_id: str) -> None:
        """The request's event is written: its reports are evidence, their families judged again, a group at
        a time (a batch's thousands do not hold SQLite's one writer for seconds). Its referrals are matched
        after, in the background: how long matching takes (opening a record is slower than finding one) must
        not show in the answer's time, or a partner could tell whether the council knew a child. What a
        stopped process leaves half done, `sweep` finishes."""
        while True:
            async with self._engine.begin() as conn:
                households, made = await make_evidence(conn, event_id, limit=EVIDENCE_GROUP)
                await refresh_households(conn, households, self._rules)
            if made < EVIDENCE_GROUP:
                break
            await self._let_others_write()
        task = asyncio.get_running_loop().create_task(self._match_quietly(event_id), name="referral matching")
        self._matching.add(task)
        task.add_done_callback(self._matching.discard)

    async def settled(self) -> None:
        """Until the referrals being matched in the background are (tests, the benchmark, shutdown)."""
        while self._matching:
            await asyncio.gather(*list(self._matching), return_exceptions=True)

    async def _match_quietly(self, event_id: str) -> int:
        try:
            return await self._match(event_id)
        except Exception as error:
            # Left pending: the next start-up's sweep, or `gateway eligibility refresh`, matches them.
            log.error("referrals not matched yet", extra={"error_type": type(error).__name__})
            return 0

    async def _let_others_write(self) -> None:
        if self._engine.dialect.name == "sqlite":
            await asyncio.sleep(0.05)  # SQLite's one writer, free for a moment for partners' requests

    async def _match(self, event_id: str | None) -> int:
        """Referrals matched a group at a time, each group its own short transaction (on SQLite the one
        writer's lock is held for a group, never for a whole batch's referrals)."""
        matched = 0
        while True:
            async with self._engine.begin() as conn:
                done = await match_referrals(conn, event_id, today=self._today(), limit=MATCH_GROUP)
            matched += len(done)
            if len(done) < MATCH_GROUP:
                return matched
            await self._let_others_write()

    async def sweep(self) -> tuple[int, int]:
        """What a stopped process left pending though its event was written: reports made evidence (their
        families judged again) and referrals matched. At start-up and by `gateway eligibility refresh`.
        Returns (reports, referrals)."""
        async with self._engine.begin() as conn:
            households, made = await make_written_evidence(conn)
            await refresh_households(conn, households, self._rules)
        return made, await self._match(None)


def _aware(moment: datetime) -> datetime:
    """As written (UTC), whichever database read it back: a retry's answer is the first one's."""
    made = utc(moment)
    assert made is not None
    return made
