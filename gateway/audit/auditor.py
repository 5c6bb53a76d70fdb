"""No audit, no data: every response of /graphql and /oauth/token waits for its audit event.

`RequestAuditor.seal` writes the request's event (and, for /graphql, the people disclosed) to the
ledger and only then releases the response, with the event id in `X-Audit-Event-Id`. If the ledger
cannot be written the client gets the endpoint's own 503 instead, and the data never leaves.
The same moment annotates the request's span and records metrics, so the audit event names the
trace and the trace names the audit event. Nothing here logs or measures a personal value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Final

from opentelemetry import trace
from starlette.responses import Response

from gateway.audit.events import EventDraft, micros_since
from gateway.audit.writer import AuditUnavailableError, LedgerWriter
from gateway.telemetry import Telemetry, trace_id_hex

log = logging.getLogger("gateway.requests")

AUDIT_HEADER: Final = "X-Audit-Event-Id"


class RequestAuditor:
    def __init__(self, ledger: LedgerWriter | None, telemetry: Telemetry, *, telemetry_key: bytes) -> None:
        self._ledger = ledger
        self._telemetry = telemetry
        self._telemetry_key = telemetry_key

    def document_hash(self, document_sha256: str) -> str:
        """A keyed hash of the document for telemetry. The plain SHA-256 stays in the ledger: a short
        document with literals (a family name and a date of birth) could be found again from its plain
        hash by trying names and dates, and telemetry is kept with less care than the ledger."""
        return hmac.new(self._telemetry_key, document_sha256.encode(), hashlib.sha256).hexdigest()

    async def seal(
        self,
        draft: EventDraft,
        response: Response,
        *,
        started: float,
        unavailable: Callable[[], Response],
        client_verified: bool,
    ) -> Response:
        """`client_verified`: the client id was authenticated; otherwise it is only what the caller
        claimed, which the ledger keeps as evidence but telemetry and logs do not repeat."""
        span = trace.get_current_span()
        for key, value in (
            ("gateway.client_id", draft.client_id if client_verified else None),
            ("gateway.agreement", draft.agreement_id),
            ("gateway.outcome", draft.outcome),
            ("gateway.error_code", draft.error_code),
            ("graphql.operation.name", draft.operation_name),
            (
                "graphql.document.hash",
                self.document_hash(draft.document_sha256) if draft.document_sha256 else None,
            ),
        ):
            if value is not None:
                span.set_attribute(key, value)
        span.set_attribute("gateway.people_count", len(draft.disclosures))
        labels = {"endpoint": draft.endpoint, "agreement": draft.agreement_id or "none"}
        if self._ledger is not None:
            try:
                await self._ledger.record(draft)
            except AuditUnavailableError:
                span.set_attribute("gateway.error_code", "AUDIT_UNAVAILABLE")
                self._telemetry.requests.add(1, {**labels, "outcome": "audit_unavailable"})
                refused = unavailable()
                self._telemetry.prometheus.request(
                    endpoint=draft.endpoint, agreement_id=draft.agreement_id, outcome="audit_unavailable",
                    status=refused.status_code, code="AUDIT_UNAVAILABLE",
                    seconds=time.perf_counter() - started, people=0,
                )  # fmt: skip
                log.error(
                    "request refused: the audit ledger is unavailable",
                    extra={**_log_fields(draft, 503, client_verified), "outcome": "audit_unavailable"},
                )
                return refused
            span.set_attribute("gateway.audit.event_id", draft.id)
            response.headers[AUDIT_HEADER] = draft.id
        seconds = time.perf_counter() - started
        self._telemetry.requests.add(1, {**labels, "outcome": draft.outcome})
        self._telemetry.request_duration.record(seconds * 1000, labels)
        self._telemetry.prometheus.request(
            endpoint=draft.endpoint, agreement_id=draft.agreement_id, outcome=draft.outcome,
            status=response.status_code, code=draft.error_code, seconds=seconds,
            people=len(draft.disclosures),
        )  # fmt: skip
        if draft.disclosures:
            self._telemetry.people_disclosed.add(
                len(draft.disclosures), {"agreement": draft.agreement_id or "none"}
            )
        log.info("request", extra=_log_fields(draft, response.status_code, client_verified))
        return response

    async def seal_failure(
        self,
        endpoint: str,
        client_address: str | None,
        response: Response,
        *,
        code: str,
        started: float,
        unavailable: Callable[[], Response],
    ) -> Response:
        """Record a request that ended before its handler could say more: a wrong method, a bug or a
        broken database. Nothing about the caller is known, so nothing about it is recorded."""
        draft = EventDraft(
            endpoint=endpoint,
            outcome="error" if response.status_code >= 500 else "denied",
            http_status=response.status_code,
            latency_us=micros_since(started),
            error_code=code,
            client_address=client_address,
            trace_id=trace_id_hex(),
        )
        return await self.seal(
            draft, response, started=started, unavailable=unavailable, client_verified=False
        )


def _log_fields(draft: EventDraft, status: int, client_verified: bool) -> dict[str, object]:
    return {
        "endpoint": draft.endpoint,
        "client_id": draft.client_id if client_verified else None,
        "agreement": draft.agreement_id,
        "status": status,
        "outcome": draft.outcome,
        "code": draft.error_code,
        "event_id": draft.id,
        "people_count": len(draft.disclosures),
        "latency_ms": round(draft.latency_us / 1000, 3),
    }
