"""The guard's parts as one object for the endpoints, with the background work they need."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditUnavailableError, LedgerWriter
from gateway.config import Settings
from gateway.guard.alerts import BREAK_GLASS_UNREVIEWED, Alert, Alerts
from gateway.guard.breakglass import BreakGlassWindows, overdue_reviews
from gateway.guard.documents import DocumentRegistry
from gateway.guard.rates import DailyPeople, RateLimits
from gateway.guard.summaries import RefusalSummaries
from gateway.guard.watch import Watch
from gateway.state import SharedState
from gateway.telemetry import Telemetry
from policies import Agreement

log = logging.getLogger("gateway.guard")

_REVIEW_CHECK_EVERY: Final = 60.0


@dataclass
class Guard:
    documents: DocumentRegistry
    rates: RateLimits
    people: DailyPeople
    alerts: Alerts
    watch: Watch
    summaries: RefusalSummaries
    windows: BreakGlassWindows
    max_document_chars: int
    review_after: timedelta
    engine: AsyncEngine
    agreements: dict[str, Agreement]
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        engine: AsyncEngine,
        state: SharedState,
        ledger: LedgerWriter | None,
        telemetry: Telemetry,
        agreements: dict[str, Agreement],
    ) -> Guard:
        alerts = Alerts(ledger, telemetry, state)
        prefix = f"gateway:{hashlib.sha256(settings.issuer.encode()).hexdigest()[:12]}:"
        return cls(
            documents=DocumentRegistry(engine),
            rates=RateLimits(settings, prefix=prefix),
            people=DailyPeople(state),
            alerts=alerts,
            watch=Watch(state, alerts),
            summaries=RefusalSummaries(ledger, telemetry),
            windows=BreakGlassWindows(engine, minutes=settings.break_glass_minutes),
            max_document_chars=settings.max_document_chars,
            review_after=timedelta(hours=settings.break_glass_review_hours),
            engine=engine,
            agreements=agreements,
        )

    async def start(self) -> None:
        await self.summaries.start()
        self._task = asyncio.create_task(self._check_reviews_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.summaries.close()
        await self.rates.close()

    async def check_reviews(self) -> int:
        """Raise BREAK_GLASS_UNREVIEWED for each window waiting longer than its review time."""
        async with self.engine.begin() as conn:
            overdue = await overdue_reviews(conn, older_than=self.review_after)
        for record in overdue:
            await self.alerts.raise_alert(
                Alert(
                    BREAK_GLASS_UNREVIEWED,
                    client_id=record.client_id,
                    agreement=self.agreements.get(record.agreement_id),
                    acting_user=record.officer,
                    officer_issuer=record.officer_issuer,
                    case_reference=record.case_reference,
                    about_event=record.event_id,
                )
            )
        return len(overdue)

    async def _check_reviews_forever(self) -> None:
        while True:
            try:
                await self.check_reviews()
            except (AuditUnavailableError, OSError) as error:
                log.warning("break-glass review check failed", extra={"error_type": type(error).__name__})
            except Exception as error:  # a background check must not die
                log.error("break-glass review check failed", extra={"error_type": type(error).__name__})
            await asyncio.sleep(_REVIEW_CHECK_EVERY)
