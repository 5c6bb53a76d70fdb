"""The access ledger: who received what, when and why, in a form that shows tampering.

Owns the ledger's tables and stored form (`events`), the group-committing writer with its signed
checkpoints (`writer`), the request auditor that holds each response until its event is durable
(`auditor`), offline verification (`verification`), reading the ledger (`queries`) and subject
access reports (`subject_access`).

May import: `gateway.config`, `gateway.db`, `gateway.keys`, `gateway.telemetry`, and the layers below
the gateway (`schema`, `resolvers`, `policies`). Never the endpoints, the app, the CLI or `gateway.oauth`:
what an endpoint did reaches the ledger as an `EventDraft` the endpoint fills in.
"""

from gateway.audit.auditor import AUDIT_HEADER, RequestAuditor
from gateway.audit.events import EventDraft, micros_since, now_text, parse_time_text, time_text
from gateway.audit.queries import LedgerQueries
from gateway.audit.subject_access import (
    SubjectAccessReport,
    UnknownPersonError,
    render_text,
    subject_access_report,
)
from gateway.audit.verification import ChainReport, verify_ledger
from gateway.audit.writer import AuditUnavailableError, LedgerWriter

__all__ = [
    "AUDIT_HEADER",
    "AuditUnavailableError",
    "ChainReport",
    "EventDraft",
    "LedgerQueries",
    "LedgerWriter",
    "RequestAuditor",
    "SubjectAccessReport",
    "UnknownPersonError",
    "micros_since",
    "now_text",
    "parse_time_text",
    "render_text",
    "subject_access_report",
    "time_text",
    "verify_ledger",
]
