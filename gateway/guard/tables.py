"""The guard's own tables: documents registered per client, and break-glass windows with their reviews."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text

guard_metadata = MetaData()

trusted_documents = Table(
    "trusted_documents",
    guard_metadata,
    Column("client_id", String(64), ForeignKey("clients.client_id"), primary_key=True),
    Column("sha256", String(64), primary_key=True),  # hex of the document's UTF-8 text
    Column("document", Text, nullable=False),
    Column("operation_names", Text, nullable=False),  # comma-separated, for `documents list`
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(200), nullable=False),
)

break_glass = Table(
    "break_glass",
    guard_metadata,
    Column("id", String(32), primary_key=True),
    Column("event_id", String(32), nullable=False),  # the ledger event of the request that opened it
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # unix time: the window for the person closes
    Column("client_id", String(64), nullable=False),
    Column("agreement_id", String(64), nullable=False),
    Column("officer", String(200), nullable=False),
    Column("officer_issuer", String(255), nullable=False),
    Column("case_reference", String(200), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("person_id", Integer, nullable=False),  # internal id: never leaves the gateway
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("reviewer", String(200), nullable=True),
    Column("review_outcome", String(16), nullable=True),  # justified | escalated
    Column("review_note", Text, nullable=True),
    Column("overdue_alerted_at", DateTime(timezone=True), nullable=True),
    Index("ix_break_glass_open", "client_id", "officer", "case_reference", "expires_at"),
)
