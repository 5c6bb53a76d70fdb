"""The ledger records who verified an event's officer: the partner identity provider's issuer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN in place (not a batch copy): SQLite would drop the append-only triggers with the table.
    # Events before it hold NULL, which the event hash leaves out, so their hashes still verify.
    op.add_column("audit_events", sa.Column("officer_issuer", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("officer_issuer")
