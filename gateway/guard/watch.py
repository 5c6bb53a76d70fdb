"""Watching each client against itself: unusual volume, and bursts of refusals.

- UNUSUAL_VOLUME: a client's requests this hour pass both VOLUME_FLOOR and VOLUME_FACTOR times its
  average hour over the last day (the baseline, read once an hour per process from the shared hourly
  counters, so every process compares against the same history). Each process adds its requests to
  the shared counter in batches (every 50 requests or 10 seconds), so the count is that far behind.
- REFUSAL_BURST: more than BURST refusals of one client in a minute.
Each is raised at most once an hour (volume) or once in ten minutes (bursts) per client.
"""

from __future__ import annotations

import time
from typing import Final

from gateway.guard.alerts import REFUSAL_BURST, UNUSUAL_VOLUME, Alert, Alerts
from gateway.state import SharedState
from policies import Agreement

HOUR: Final = 3600
BASELINE_HOURS: Final = 24
VOLUME_FLOOR: Final = 1_000
VOLUME_FACTOR: Final = 10
BURST: Final = 20
FLUSH_REQUESTS: Final = 50  # a process adds its count to the shared one every 50 requests ...
FLUSH_SECONDS: Final = 10.0  # ... or every 10 seconds, whichever comes first


class Watch:
    def __init__(self, state: SharedState, alerts: Alerts) -> None:
        self._state = state
        self._alerts = alerts
        self._baselines: dict[str, tuple[int, float]] = {}  # client: (hour it was read in, mean)
        # Requests counted here and added to the shared hourly counter in batches, so that a request
        # does not pay a round trip for it: (requests not yet added, when they were last added).
        self._pending: dict[str, tuple[int, float]] = {}

    async def request(self, client_id: str, agreement: Agreement) -> None:
        waiting, added_at = self._pending.get(client_id, (0, time.monotonic()))
        waiting += 1
        if waiting < FLUSH_REQUESTS and time.monotonic() - added_at < FLUSH_SECONDS:
            self._pending[client_id] = (waiting, added_at)
            return
        self._pending[client_id] = (0, time.monotonic())
        count = await self._state.hit(f"volume:{client_id}", window_seconds=HOUR, amount=waiting)
        if count <= VOLUME_FLOOR:
            return
        if count > VOLUME_FACTOR * await self._baseline(client_id):
            await self._alerts.raise_alert(
                Alert(UNUSUAL_VOLUME, client_id=client_id, agreement=agreement), once_per=HOUR
            )

    async def refusal(self, client_id: str, agreement: Agreement | None) -> None:
        if await self._state.hit(f"refusals:{client_id}", window_seconds=60) == BURST + 1:
            await self._alerts.raise_alert(
                Alert(REFUSAL_BURST, client_id=client_id, agreement=agreement), once_per=600
            )

    async def _baseline(self, client_id: str) -> float:
        hour = int(time.time()) // HOUR
        known = self._baselines.get(client_id)
        if known is not None and known[0] == hour:
            return known[1]
        counts = [
            await self._state.peek(f"volume:{client_id}", window_seconds=HOUR, at=(hour - back) * HOUR)
            for back in range(1, BASELINE_HOURS + 1)
        ]
        mean = sum(counts) / len(counts)
        if len(self._baselines) > 10_000:
            self._baselines.clear()
        self._baselines[client_id] = (hour, mean)
        return mean
