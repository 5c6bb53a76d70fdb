"""Refusals past a rate limit, counted into one summary event a minute instead of a row each.

A client or an address that keeps sending past its limit must not be able to grow the append-only
ledger without bound, and the ledger must still say what happened. So each 429 RATE_LIMITED is
counted under its key (the endpoint, client or address, and code) and the first refusal of each minute
stands for them all: written when the minute is over (or at shutdown) with `request_count` holding how
many requests it stands for. The refused response carries that event's id in X-Audit-Event-Id at
once; it carries no data, so nothing waits for the event.

Refusals of one process are summarised by that process (each keeps its own chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Final

from gateway.audit import AuditUnavailableError, EventDraft, LedgerWriter
from gateway.telemetry import Telemetry

log = logging.getLogger("gateway.summaries")

WINDOW_SECONDS: Final = 60.0
_FLUSH_EVERY: Final = 5.0


@dataclass
class _Window:
    draft: EventDraft  # the first refusal, which the summary event is made from
    opened: float
    count: int = 0


class RefusalSummaries:
    def __init__(self, ledger: LedgerWriter | None, telemetry: Telemetry) -> None:
        self._ledger = ledger
        self._telemetry = telemetry
        self._windows: dict[str, _Window] = {}
        self._task: asyncio.Task[None] | None = None

    def count(self, key: str, draft: EventDraft) -> str:
        """Count one refusal; the id of the summary event that will stand for it."""
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window.opened >= WINDOW_SECONDS:
            if window is not None:
                self._write_soon(key, window)
            window = self._windows[key] = _Window(draft=draft, opened=now)
        window.count += 1
        self._telemetry.refusals_summarised.add(
            1, {"endpoint": draft.endpoint, "code": draft.error_code or ""}
        )
        self._telemetry.prometheus.request(
            endpoint=draft.endpoint, agreement_id=draft.agreement_id, outcome=draft.outcome,
            status=draft.http_status, code=draft.error_code, seconds=draft.latency_us / 1e6, people=0,
        )  # fmt: skip
        return window.draft.id

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(everything=True)

    async def flush(self, *, everything: bool = False) -> None:
        """Write the summaries of windows that are over (all of them at shutdown)."""
        now = time.monotonic()
        for key, window in list(self._windows.items()):
            if everything or now - window.opened >= WINDOW_SECONDS:
                del self._windows[key]
                await self._write(window)

    def _write_soon(self, key: str, window: _Window) -> None:
        del self._windows[key]
        task = asyncio.create_task(self._write(window))
        task.add_done_callback(lambda _: None)

    async def _write(self, window: _Window) -> None:
        if self._ledger is None:
            return
        summary = replace(window.draft, request_count=window.count, latency_us=0)
        try:
            await self._ledger.record(summary)
        except AuditUnavailableError:
            # Not lost from view: the ledger's own failure metrics and alarms say it could not write.
            log.error("a refusal summary could not be written", extra={"event_id": summary.id})

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            await self.flush()
