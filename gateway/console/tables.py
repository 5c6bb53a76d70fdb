"""The console's own working state: sign-in sessions and alert acknowledgements.

A session is kept on the server, so that signing out, or an operator deleting the row, ends it at
once; the browser holds only a random token, and the table holds only its SHA-256. What a reader did
is in the ledger, not here: an acknowledgement row says only that an alert left the queue, and why.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text

console_metadata = MetaData()

console_sessions = Table(
    "console_sessions",
    console_metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("reader", String(200), nullable=False),  # as the agreement's reader_claim names them
    Column("issuer", String(255), nullable=False),  # the identity provider that verified them
    # The claims the agreement's console rules read (JSON): admission is checked again on every request,
    # so a reader the agreement stops admitting is out at their next page, not at the session's end.
    Column("claims", Text, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("case_reference", String(200), nullable=True),  # why they are looking; asked before any read
    Column("created_at", BigInteger, nullable=False),  # unix time
    Column("seen_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_console_sessions_expires_at", console_sessions.c.expires_at)

alert_acknowledgements = Table(
    "alert_acknowledgements",
    console_metadata,
    Column("event_id", String(32), primary_key=True),  # the alert's ledger event
    Column("acknowledged_at", BigInteger, nullable=False),
    Column("reader", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Column("ledger_event_id", String(32), nullable=False),  # the event recording the acknowledgement
)
