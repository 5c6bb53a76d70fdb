"""The audit ledger's tables: append-only, hash-chained per writing process.

Times are stored as fixed-width UTC text (`2026-11-22T04:05:44.948123Z`) rather than as database
timestamps: the hash covers the exact text, which must read back identically from SQLite and from
PostgreSQL, and fixed-width text still sorts and compares by time.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

ledger_metadata = MetaData()

audit_chains = Table(
    "audit_chains",
    ledger_metadata,
    Column("chain_id", String(36), primary_key=True),
    Column("started_at", String(27), nullable=False),
    Column("host", String(255), nullable=False),
    Column("process_id", Integer, nullable=False),
    Column("writer", String(64), nullable=False),
)

audit_events = Table(
    "audit_events",
    ledger_metadata,
    Column("id", String(32), primary_key=True),
    Column("chain_id", String(36), ForeignKey("audit_chains.chain_id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("occurred_at", String(27), nullable=False),
    Column("endpoint", String(16), nullable=False),
    Column("client_id", String(64), nullable=True),
    Column("agreement_id", String(64), nullable=True),
    Column("agreement_version", Integer, nullable=True),
    Column("purpose", Text, nullable=True),
    Column("lawful_basis", Text, nullable=True),
    Column("decision_rule", String(64), nullable=True),
    Column("acting_user", String(200), nullable=True),
    # The issuer of the signed token that named acting_user (RFC 8693 exchange); NULL: the partner
    # asserted the officer in a header. Hashed only when set (added in migration 0005).
    Column("officer_issuer", String(255), nullable=True),
    # A summary event stands for this many refused requests of one client or address in one minute
    # (past a rate limit); NULL for an event of one request. Hashed only when set (migration 0006).
    Column("request_count", Integer, nullable=True),
    Column("case_reference", String(200), nullable=True),
    Column("break_glass_reason", String(200), nullable=True),
    Column("operation_name", String(100), nullable=True),
    Column("document_sha256", String(64), nullable=True),
    Column("fields_disclosed", Text, nullable=False),
    Column("fields_withheld", Text, nullable=False),
    Column("people_count", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("http_status", Integer, nullable=False),
    Column("client_address", String(64), nullable=True),
    Column("latency_us", BigInteger, nullable=False),
    Column("trace_id", String(32), nullable=True),
    Column("token_jti", String(64), nullable=True),
    # When the writer committed the event: never earlier than its predecessor's in the chain, so each
    # chain is in order by it (occurred_at, the request's own time, need not be: a summary of refusals
    # carries its first refusal's time and is written a minute later). On PostgreSQL the ledger is
    # partitioned by month on it, so retention drops a prefix of every chain (migration 0007). Not
    # hashed: it says where a row is kept, not what happened; NULL-able only for SQLite.
    Column("recorded_at", String(27), nullable=True),
    UniqueConstraint("chain_id", "seq", name="uq_audit_events_chain_seq"),
)
Index("ix_audit_events_occurred_at", audit_events.c.occurred_at)
Index("ix_audit_events_client_id", audit_events.c.client_id)
Index("ix_audit_events_agreement_id", audit_events.c.agreement_id)

audit_disclosures = Table(
    "audit_disclosures",
    ledger_metadata,
    Column("event_id", String(32), ForeignKey("audit_events.id"), primary_key=True),
    # The council's internal person id: the register is keyed by person for subject access requests.
    # No foreign key to people: the record of a disclosure outlives the record disclosed.
    Column("person_id", Integer, primary_key=True),
    Column("fields", Text, nullable=False),
    # Its event's recorded_at: on PostgreSQL the register is partitioned by month on it, like the
    # events (migration 0007). Always written; NULL-able only because SQLite cannot add a NOT NULL column.
    Column("recorded_at", String(27), nullable=True),
)
Index("ix_audit_disclosures_person_id", audit_disclosures.c.person_id)

audit_checkpoints = Table(
    "audit_checkpoints",
    ledger_metadata,
    Column("chain_id", String(36), ForeignKey("audit_chains.chain_id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    # Written at shutdown: the chain ends here, and an event after it is a forgery.
    Column("final", Boolean, primary_key=True),
    Column("head_hash", String(64), nullable=False),
    Column("signed_at", String(27), nullable=False),
    Column("key_id", String(100), nullable=False),
    Column("signature", Text, nullable=False),  # compact JWS (ES256) over chain, seq, hash and time
    # A final checkpoint written for a writer that died: why the chain was sealed, and by whom.
    Column("abandoned", Text, nullable=True),
)

# What a retention run dropped from each chain: the signed head of the last event dropped, from
# which verification takes the chain up (migration 0007).
audit_retention = Table(
    "audit_retention",
    ledger_metadata,
    Column("chain_id", String(36), ForeignKey("audit_chains.chain_id"), primary_key=True),
    Column("through_seq", BigInteger, primary_key=True),
    Column("head_hash", String(64), nullable=False),
    Column("dropped_before", String(7), nullable=False),  # YYYY-MM: the first month kept
    Column("events", BigInteger, nullable=False),  # of this chain, dropped by this run
    Column("signed_at", String(27), nullable=False),
    Column("key_id", String(100), nullable=False),
    Column("signature", Text, nullable=False),  # compact JWS (ES256) over the row's other columns
)

LEDGER_TABLES = ("audit_chains", "audit_events", "audit_disclosures", "audit_checkpoints", "audit_retention")
# Partitioned by month on PostgreSQL.
PARTITIONED_TABLES = ("audit_events", "audit_disclosures")
