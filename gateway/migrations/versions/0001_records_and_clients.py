"""The council's records (people, households, addresses, assessments, objections) and OAuth clients.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OUTCOME_COLUMNS = (
    "need_education",
    "need_early_years",
    "need_health",
    "need_substance_use",
    "need_family_relationships",
    "need_safe_from_exploitation",
    "need_crime_prevention",
    "need_domestic_abuse",
    "need_housing",
    "need_financial_stability",
)


def upgrade() -> None:
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("uprn", sa.String(12), nullable=True),
        sa.Column("line1", sa.String(200), nullable=False),
        sa.Column("line2", sa.String(200), nullable=True),
        sa.Column("town", sa.String(100), nullable=False),
        sa.Column("postcode", sa.String(8), nullable=False),
        sa.UniqueConstraint("uprn", name="uq_addresses_uprn"),
        sa.CheckConstraint("uprn IS NULL OR length(uprn) BETWEEN 1 AND 12", name="ck_addresses_uprn_length"),
    )
    op.create_table(
        "households",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "address_id",
            sa.Integer,
            sa.ForeignKey("addresses.id", name="fk_households_address_id_addresses"),
            nullable=False,
        ),
    )
    op.create_table(
        "people",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "household_id",
            sa.Integer,
            sa.ForeignKey("households.id", name="fk_people_household_id_households"),
            nullable=False,
        ),
        sa.Column("given_name", sa.String(100), nullable=False),
        sa.Column("family_name", sa.String(100), nullable=False),
        sa.Column("date_of_birth", sa.Date, nullable=False),
        sa.Column("phone", sa.String(20), nullable=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("school", sa.String(200), nullable=True),
        sa.Column("protected_address", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("restricted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("retention_until", sa.Date, nullable=False),
        sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_people_household_id", "people", ["household_id"])
    op.create_index("ix_people_name_dob", "people", [sa.text("lower(family_name)"), "date_of_birth"])
    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "household_id",
            sa.Integer,
            sa.ForeignKey("households.id", name="fk_assessments_household_id_households"),
            nullable=False,
        ),
        sa.Column("assessed_on", sa.Date, nullable=False),
        *(sa.Column(name, sa.Boolean, nullable=False, server_default=sa.false()) for name in OUTCOME_COLUMNS),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("coordinated_support", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("household_id", name="uq_assessments_household_id"),
    )
    op.create_table(
        "objections",
        sa.Column(
            "person_id",
            sa.Integer,
            sa.ForeignKey("people.id", name="fk_objections_person_id_people"),
            primary_key=True,
        ),
        sa.Column("agreement_id", sa.String(64), primary_key=True),
        sa.Column("recorded_on", sa.Date, nullable=False),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        # SHA-256 of a 256-bit random secret; the secret itself is shown once and never stored.
        sa.Column("secret_hash", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    for table in ("clients", "objections", "assessments", "people", "households", "addresses"):
        op.drop_table(table)
