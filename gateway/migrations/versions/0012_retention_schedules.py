"""Retention schedules as data: each person's records by class, with the date its schedule counts from
(policies/retention.yaml), so that `gateway retention run` can tell who is past retention.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_records",
        sa.Column(
            "person_id",
            sa.Integer,
            sa.ForeignKey("people.id", name="fk_person_records_person_id_people"),
            nullable=False,
        ),
        sa.Column("record_class", sa.String(64), nullable=False),
        # NULL: the record is still open (a programme not ended, a case still active): never due.
        sa.Column("counted_from", sa.Date, nullable=True),
        sa.PrimaryKeyConstraint("person_id", "record_class", name="pk_person_records"),
    )
    op.create_index("ix_person_records_record_class", "person_records", ["record_class"])


def downgrade() -> None:
    op.drop_index("ix_person_records_record_class", table_name="person_records")
    op.drop_table("person_records")
