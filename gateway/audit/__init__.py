"""The access ledger: who received what, when and why, in a form that shows tampering.

Owns the ledger's tables and stored form (`events`), the group-committing writer with its signed
checkpoints (`writer`), chains and their writers' liveness, and sealing the chains of writers that
died (`chains`), the witness that keeps the evidence outside the database (`witness`), the request
auditor that holds each response until its event is durable (`auditor`), offline verification
(`verification`), reading the ledger (`queries`) and subject access reports (`subject_access`).

May import: `gateway.config`, `gateway.db`, `gateway.keys`, `gateway.telemetry`, and the layers below
the gateway (`schema`, `resolvers`, `policies`). Never the endpoints, the app, the CLI or `gateway.oauth`:
what an endpoint did reaches the ledger as an `EventDraft` the endpoint fills in.
"""

from gateway.audit.auditor import AUDIT_HEADER, RequestAuditor
from gateway.audit.chains import SealedChain, seal_abandoned, seal_orphans
from gateway.audit.errors import (
    AuditError,
    ChainClosedError,
    ChainStillWritingError,
    UnknownChainError,
    WitnessError,
)
from gateway.audit.events import EventDraft, micros_since, now_text, parse_time_text, time_text
from gateway.audit.queries import LedgerQueries
from gateway.audit.subject_access import (
    SubjectAccessReport,
    UnknownPersonError,
    render_html,
    render_text,
    subject_access_report,
)
from gateway.audit.verification import ChainReport, verify_ledger
from gateway.audit.witness import (
    Witness,
    WitnessReport,
    read_witness,
    verify_witness,
    witness_for,
)
from gateway.audit.writer import AuditUnavailableError, LedgerWriter

__all__ = [
    "AUDIT_HEADER",
    "AuditError",
    "AuditUnavailableError",
    "ChainClosedError",
    "ChainReport",
    "ChainStillWritingError",
    "EventDraft",
    "LedgerQueries",
    "LedgerWriter",
    "RequestAuditor",
    "SealedChain",
    "SubjectAccessReport",
    "UnknownChainError",
    "UnknownPersonError",
    "Witness",
    "WitnessError",
    "WitnessReport",
    "micros_since",
    "now_text",
    "parse_time_text",
    "read_witness",
    "render_html",
    "render_text",
    "seal_abandoned",
    "seal_orphans",
    "subject_access_report",
    "time_text",
    "verify_ledger",
    "verify_witness",
    "witness_for",
]
