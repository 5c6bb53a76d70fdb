"""Abuse resistance: what a client may run, how fast, how much, and the alarms when it tries more.

- `documents`: trusted documents, registered per client and sent by SHA-256.
- `rates`: requests per second and minute per client, unauthenticated requests per address, and the
  daily quota of distinct people per client.
- `summaries`: refusals past a rate limit counted into one summary event a minute.
- `alerts` and `watch`: alert events (break-glass, quota, unusual volume, refusal bursts).
- `breakglass`: MASH's break-glass windows, one person at a time, and their review queue.

The shape and cost limits of a document are checked by its view (schema/limits.py).
"""

from gateway.guard.alerts import KINDS as ALERT_KINDS
from gateway.guard.alerts import Alert, Alerts
from gateway.guard.breakglass import (
    OUTCOMES,
    BreakGlassError,
    BreakGlassRecord,
    BreakGlassWindows,
    list_break_glass,
    overdue_reviews,
    review_break_glass,
)
from gateway.guard.documents import (
    DocumentError,
    DocumentRegistry,
    TrustedDocument,
    add_document,
    check_against_view,
    document_hash,
    list_documents,
    remove_document,
    requested_hash,
)
from gateway.guard.guard import Guard
from gateway.guard.ledger import SecurityLedger
from gateway.guard.obligations import Discharged, unmet
from gateway.guard.rates import DailyPeople, RateLimits, Throttled
from gateway.guard.summaries import RefusalSummaries
from gateway.guard.tables import guard_metadata
from gateway.guard.watch import Watch

__all__ = [
    "ALERT_KINDS",
    "OUTCOMES",
    "Alert",
    "Alerts",
    "BreakGlassError",
    "BreakGlassRecord",
    "BreakGlassWindows",
    "DailyPeople",
    "Discharged",
    "DocumentError",
    "DocumentRegistry",
    "Guard",
    "RateLimits",
    "RefusalSummaries",
    "SecurityLedger",
    "Throttled",
    "TrustedDocument",
    "Watch",
    "add_document",
    "check_against_view",
    "document_hash",
    "guard_metadata",
    "list_break_glass",
    "list_documents",
    "overdue_reviews",
    "remove_document",
    "requested_hash",
    "review_break_glass",
    "unmet",
]
