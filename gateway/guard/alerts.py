"""Alerts for the security team: an audit event of kind `alert`, a log line and a metric.

Kinds (the event's `error_code`):
- BREAK_GLASS            MASH broke the glass for a person (every time a window opens)
- BREAK_GLASS_UNREVIEWED a break-glass has waited longer than its review time
- QUOTA_EXCEEDED         a client reached the distinct people its agreement allows in a day
- UNUSUAL_VOLUME         a client's requests this hour are far above its own recent hours
- REFUSAL_BURST          many refusals of one client in a minute

An alert that the policy demands (break-glass) is written before the response is sent, and the
request fails if it cannot be. Repeats of one kind for one client are raised once per `once_per`.
Nothing personal goes into the log line or the metric: kind, client, agreement and event id.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Final

from gateway.audit import EventDraft, LedgerWriter
from gateway.state import SharedState
from gateway.telemetry import Telemetry, trace_id_hex
from policies import Agreement

log = logging.getLogger("gateway.alerts")

BREAK_GLASS: Final = "BREAK_GLASS"
BREAK_GLASS_UNREVIEWED: Final = "BREAK_GLASS_UNREVIEWED"
QUOTA_EXCEEDED: Final = "QUOTA_EXCEEDED"
UNUSUAL_VOLUME: Final = "UNUSUAL_VOLUME"
REFUSAL_BURST: Final = "REFUSAL_BURST"
KINDS: Final = (BREAK_GLASS, BREAK_GLASS_UNREVIEWED, QUOTA_EXCEEDED, UNUSUAL_VOLUME, REFUSAL_BURST)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    client_id: str | None = None
    agreement: Agreement | None = None
    acting_user: str | None = None
    officer_issuer: str | None = None
    case_reference: str | None = None
    break_glass_reason: str | None = None
    client_address: str | None = None
    about_event: str | None = None  # the event that caused it, named in the alert's operation_name


class Alerts:
    def __init__(self, ledger: LedgerWriter | None, telemetry: Telemetry, state: SharedState) -> None:
        self._ledger = ledger
        self._telemetry = telemetry
        self._state = state

    async def raise_alert(self, alert: Alert, *, once_per: int = 0, key: str = "") -> str | None:
        """Record the alert; its event id, or None if one like it was raised within `once_per` seconds.
        Raises AuditUnavailableError if the ledger cannot take it."""
        if once_per:
            fresh = await self._state.first_use(
                f"alert:{alert.kind}:{alert.client_id or '-'}:{key}", expires_at=int(time.time()) + once_per
            )
            if not fresh:
                return None
        draft = EventDraft(
            endpoint="alert",
            outcome="alert",
            http_status=0,
            latency_us=0,
            client_id=alert.client_id,
            acting_user=alert.acting_user,
            officer_issuer=alert.officer_issuer,
            case_reference=alert.case_reference,
            break_glass_reason=alert.break_glass_reason,
            error_code=alert.kind,
            client_address=alert.client_address,
            operation_name=f"about {alert.about_event}" if alert.about_event else None,
            trace_id=trace_id_hex(),
        )
        if alert.agreement is not None:
            draft = replace(
                draft,
                agreement_id=alert.agreement.id,
                agreement_version=alert.agreement.version,
                purpose=alert.agreement.purpose,
                lawful_basis=alert.agreement.lawful_basis,
            )
        if self._ledger is not None:
            await self._ledger.record(draft)
        agreement = alert.agreement.id if alert.agreement else "none"
        self._telemetry.alerts.add(1, {"kind": alert.kind, "agreement": agreement})
        self._telemetry.prometheus.alert(alert.kind)
        log.warning(
            "alert",
            extra={
                "kind": alert.kind,
                "client_id": alert.client_id,
                "agreement": agreement,
                "event_id": draft.id,
                "about_event": alert.about_event,
            },
        )
        return draft.id
