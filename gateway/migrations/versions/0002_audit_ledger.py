"""The audit ledger: chains, events, the disclosure register and signed checkpoints; append-only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("audit_chains", "audit_events", "audit_disclosures", "audit_checkpoints")


def upgrade() -> None:
    op.create_table(
        "audit_chains",
        sa.Column("chain_id", sa.String(36), primary_key=True),
        sa.Column("started_at", sa.String(27), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("process_id", sa.Integer, nullable=False),
        sa.Column("writer", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("chain_id", sa.String(36), sa.ForeignKey("audit_chains.chain_id"), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.String(27), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("agreement_id", sa.String(64), nullable=True),
        sa.Column("agreement_version", sa.Integer, nullable=True),
        sa.Column("purpose", sa.Text, nullable=True),
        sa.Column("lawful_basis", sa.Text, nullable=True),
        sa.Column("decision_rule", sa.String(64), nullable=True),
        sa.Column("acting_user", sa.String(200), nullable=True),
        sa.Column("case_reference", sa.String(200), nullable=True),
        sa.Column("break_glass_reason", sa.String(200), nullable=True),
        sa.Column("operation_name", sa.String(100), nullable=True),
        sa.Column("document_sha256", sa.String(64), nullable=True),
        sa.Column("fields_disclosed", sa.Text, nullable=False),
        sa.Column("fields_withheld", sa.Text, nullable=False),
        sa.Column("people_count", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("latency_us", sa.BigInteger, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("token_jti", sa.String(64), nullable=True),
        sa.UniqueConstraint("chain_id", "seq", name="uq_audit_events_chain_seq"),
    )
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_index("ix_audit_events_client_id", "audit_events", ["client_id"])
    op.create_index("ix_audit_events_agreement_id", "audit_events", ["agreement_id"])
    op.create_table(
        "audit_disclosures",
        sa.Column("event_id", sa.String(32), sa.ForeignKey("audit_events.id"), primary_key=True),
        sa.Column("person_id", sa.Integer, primary_key=True),
        sa.Column("fields", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_disclosures_person_id", "audit_disclosures", ["person_id"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("chain_id", sa.String(36), sa.ForeignKey("audit_chains.chain_id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("final", sa.Boolean, primary_key=True),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.String(27), nullable=False),
        sa.Column("key_id", sa.String(100), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    _append_only()


def _append_only() -> None:
    """Refuse UPDATE and DELETE in the database too. The hash chain is the evidence; this is a fence.

    Someone with the rights to drop a trigger can still alter rows: `gateway audit verify` finds that.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'the audit ledger is append-only (% on %)', TG_OP, TG_TABLE_NAME; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
            )
    else:
        for table in TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    for table in reversed(TABLES):
        op.drop_table(table)
