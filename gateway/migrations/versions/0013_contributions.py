"""Two-way sharing: what partners contribute about people (indicators, with provenance), and each
family's eligibility timeline computed from the evidence (policies/eligibility/).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contributions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "person_id",
            sa.Integer,
            sa.ForeignKey("people.id", name="fk_contributions_person_id_people"),
            nullable=False,
        ),
        sa.Column("household_id", sa.Integer, nullable=False),  # the family, when it was reported
        sa.Column("indicator", sa.String(64), nullable=False),
        sa.Column("observed_on", sa.Date, nullable=False),
        sa.Column("flag", sa.Boolean, nullable=True),
        sa.Column("percent", sa.Numeric(5, 2), nullable=True),
        sa.Column("term", sa.String(32), nullable=True),
        # Provenance: which client, under which agreement, for which officer, in which request.
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("acting_user", sa.String(200), nullable=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # 'pending' until the request's audit event is written, then 'recorded': only recorded evidence
        # counts, so nothing a partner said takes effect without its event.
        sa.Column("state", sa.String(16), nullable=False),
        # A retry with the same key gets the first answer; the same key with other values is refused.
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.UniqueConstraint("client_id", "idempotency_key", name="uq_contributions_client_id"),
    )
    op.create_index("ix_contributions_household_id", "contributions", ["household_id"])
    op.create_index("ix_contributions_person_id", "contributions", ["person_id"])
    op.create_table(
        "eligibility_intervals",
        sa.Column(
            "household_id",
            sa.Integer,
            sa.ForeignKey("households.id", name="fk_eligibility_intervals_household_id_households"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),  # eligible | criterion
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_until", sa.Date, nullable=True),  # the first day it no longer holds; NULL: open
        sa.PrimaryKeyConstraint("household_id", "kind", "valid_from", name="pk_eligibility_intervals"),
    )


def downgrade() -> None:
    op.drop_table("eligibility_intervals")
    op.drop_index("ix_contributions_person_id", table_name="contributions")
    op.drop_index("ix_contributions_household_id", table_name="contributions")
    op.drop_table("contributions")
