"""Partner identity: clients' public keys, revoked tokens, and the shared replay store and counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A client authenticates with its own keys (private_key_jwt) or, in development, a secret.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("jwks", sa.Text, nullable=True))
        batch.alter_column("secret_hash", existing_type=sa.String(100), nullable=True)
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),  # the token's exp: kept until then
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    op.create_table(
        "replay_guard",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_replay_guard_expires_at", "replay_guard", ["expires_at"])
    op.create_table(
        "shared_counters",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shared_counters")
    op.drop_index("ix_replay_guard_expires_at", table_name="replay_guard")
    op.drop_table("replay_guard")
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("clients") as batch:
        batch.alter_column("secret_hash", existing_type=sa.String(100), nullable=False)
        batch.drop_column("jwks")
