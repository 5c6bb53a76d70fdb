"""Data subjects' rights as records: each request (access, rectification, erasure, restriction,
objection) with who recorded it, when, on what basis and its outcome; restrictions of processing that
take people out of views until lifted; objections to every agreement at once ('*').

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restrictions",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("agreement_id", sa.String(64), primary_key=True),
        sa.Column("recorded_on", sa.Date, nullable=False),
    )
    op.create_table(
        "rights_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("person_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=True),
        sa.Column("received_on", sa.Date, nullable=False),
        sa.Column("requested_by", sa.String(16), nullable=False),
        sa.Column("legal_basis", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome_note", sa.Text, nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_rights_requests_person_id", "rights_requests", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_rights_requests_person_id", table_name="rights_requests")
    op.drop_table("rights_requests")
    op.drop_table("restrictions")
