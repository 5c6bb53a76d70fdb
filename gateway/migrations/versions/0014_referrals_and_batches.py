"""Two-way sharing, continued: referrals of people the council may not yet know (matched after their
request's event is written, never made a duplicate silently), and partners' batches of reports (a job with
its rows and each row's result, written to the ledger as one event when the last row is done).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(32), primary_key=True),
        # What the partner sent: the person as it knows them.
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("given_name", sa.String(100), nullable=False),
        sa.Column("family_name", sa.String(100), nullable=False),
        sa.Column("date_of_birth", sa.Date, nullable=False),
        sa.Column("address_line1", sa.String(200), nullable=False),
        sa.Column("town", sa.String(100), nullable=False),
        sa.Column("postcode", sa.String(8), nullable=False),
        # Provenance, as for a contribution.
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("acting_user", sa.String(200), nullable=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # pending (its event not yet written) | matched | opened | review | linked
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column(
            "person_id",
            sa.Integer,
            sa.ForeignKey("people.id", name="fk_referrals_person_id_people"),
            nullable=True,
        ),
        sa.Column("candidates", sa.Text, nullable=True),  # review: the people it might be, comma-separated
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),  # an officer's decision; NULL: matched
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.UniqueConstraint("client_id", "idempotency_key", name="uq_referrals_client_id"),
    )
    op.create_index("ix_referrals_person_id", "referrals", ["person_id"])
    # One idempotency key names one thing a client sent, a report or a referral, whichever table keeps it:
    # the two tables' inserts meet here, so that two requests racing with one key cannot both succeed.
    op.create_table(
        "report_keys",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # contribution | referral
        sa.PrimaryKeyConstraint("client_id", "idempotency_key", name="pk_report_keys"),
    )
    op.execute(
        "INSERT INTO report_keys (client_id, idempotency_key, kind) "
        "SELECT client_id, idempotency_key, 'contribution' FROM contributions"
    )
    # The highest id ever given to a person, household or address, purged ones included: a record opened
    # for a referred child never takes the id of someone purged (their refs, their ledger history).
    op.create_table(
        "id_high_water",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("last_id", sa.Integer, nullable=False),
    )
    # Ids purged before this migration are known only to the ledger (a person's) or gone (a household's, an
    # address's): start above every one still held and every person the ledger names.
    bind = op.get_bind()
    highest = {
        "people": max(
            bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM people")).scalar_one(),
            bind.execute(sa.text("SELECT coalesce(max(person_id), 0) FROM audit_disclosures")).scalar_one(),
        ),
        "households": bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM households")).scalar_one(),
        "addresses": bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM addresses")).scalar_one(),
    }
    for name, last_id in highest.items():
        if last_id:
            bind.execute(
                sa.text("INSERT INTO id_high_water (name, last_id) VALUES (:name, :last_id)"),
                {"name": name, "last_id": last_id},
            )
    op.create_index("ix_referrals_state", "referrals", ["state"])
    op.create_index("ix_people_date_of_birth", "people", ["date_of_birth"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("acting_user", sa.String(200), nullable=True),
        sa.Column("officer_issuer", sa.String(300), nullable=True),  # who verified acting_user, if anyone
        sa.Column("case_reference", sa.String(200), nullable=True),
        sa.Column("format", sa.String(8), nullable=False),  # ndjson | csv
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("processed", sa.Integer, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        # received (its upload's event not yet written) | running | sealing (every row done, its event not yet
        # written) | done | stopped
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stop_code", sa.String(64), nullable=True),
        sa.Column("event_id", sa.String(32), nullable=False),  # the batch's one audit event, known ahead
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),  # a process is working on it
        sa.Column("lease_owner", sa.String(64), nullable=True),  # which one
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # chunks that failed, in a row
        sa.Column("upload_event_id", sa.String(32), nullable=False),  # the upload request's own event
        sa.UniqueConstraint("client_id", "idempotency_key", name="uq_batches_client_id"),
    )
    op.create_table(
        "batch_rows",
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", name="fk_batch_rows_batch_id_batches"),
            nullable=False,
        ),
        sa.Column("row_no", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=True),  # the row as sent, until its result is recorded
        sa.Column("status", sa.String(16), nullable=True),  # NULL: not yet done | accepted | rejected
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("message", sa.String(300), nullable=True),
        sa.Column("result_id", sa.String(32), nullable=True),  # the contribution or referral it made
        sa.Column("person_id", sa.Integer, nullable=True),  # whom an accepted report is about
        sa.PrimaryKeyConstraint("batch_id", "row_no", name="pk_batch_rows"),
    )


def downgrade() -> None:
    op.drop_table("batch_rows")
    op.drop_table("batches")
    op.drop_table("id_high_water")
    op.drop_table("report_keys")
    op.drop_index("ix_people_date_of_birth", table_name="people")
    op.drop_index("ix_referrals_state", table_name="referrals")
    op.drop_index("ix_referrals_person_id", table_name="referrals")
    op.drop_table("referrals")
