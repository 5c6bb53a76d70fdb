"""Abuse resistance: trusted documents per client, break-glass windows and reviews, shared sets
(distinct people disclosed per client per day), and summary events that stand for many refusals.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trusted_documents",
        sa.Column("client_id", sa.String(64), sa.ForeignKey("clients.client_id"), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("operation_names", sa.Text, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "break_glass",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("officer", sa.String(200), nullable=False),
        sa.Column("officer_issuer", sa.String(255), nullable=False),
        sa.Column("case_reference", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("person_id", sa.Integer, nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=True),
        sa.Column("review_outcome", sa.String(16), nullable=True),
        sa.Column("review_note", sa.Text, nullable=True),
        sa.Column("overdue_alerted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_break_glass_open", "break_glass", ["client_id", "officer", "case_reference", "expires_at"]
    )
    op.create_table(
        "shared_sets",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("member", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_shared_sets_expires_at", "shared_sets", ["expires_at"])
    # ADD COLUMN in place (not a batch copy): SQLite would drop the append-only triggers with the table.
    # NULL for every event but a summary; the event hash leaves NULL out, so older hashes still verify.
    op.add_column("audit_events", sa.Column("request_count", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("request_count")
    op.drop_index("ix_shared_sets_expires_at", table_name="shared_sets")
    op.drop_table("shared_sets")
    op.drop_index("ix_break_glass_open", table_name="break_glass")
    op.drop_table("break_glass")
    op.drop_table("trusted_documents")
