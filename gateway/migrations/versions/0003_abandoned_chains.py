"""Abandoned chains: a final checkpoint may say its writer died, and why the chain was sealed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN in place (not a batch copy): SQLite would drop the append-only triggers with the table.
    op.add_column("audit_checkpoints", sa.Column("abandoned", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("abandoned")
