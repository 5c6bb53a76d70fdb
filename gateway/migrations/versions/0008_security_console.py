"""The security console: sign-in sessions kept on the server, and alert acknowledgements.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("reader", sa.String(200), nullable=False),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("claims", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("case_reference", sa.String(200), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "alert_acknowledgements",
        sa.Column("event_id", sa.String(32), primary_key=True),
        sa.Column("acknowledged_at", sa.BigInteger, nullable=False),
        sa.Column("reader", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("ledger_event_id", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_acknowledgements")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
