"""The ledger at scale: events and disclosures partitioned by month (PostgreSQL), retention records.

On PostgreSQL `audit_events` and `audit_disclosures` become tables partitioned by range of a new
column, `recorded_at` (fixed-width UTC text, compared byte by byte: COLLATE "C"), one partition a
month, so that retention drops whole months instead of deleting rows from an append-only table. The
writer sets `recorded_at` when it commits, never earlier than the chain's previous event, so every
chain is in order by it and retention always drops a prefix of each chain (`occurred_at`, the
request's time, is not in order: a summary of refusals is written a minute after its time). Existing
events get the running maximum of `occurred_at` along their chain; rows inserted without it (by hand)
get the time of the insert. The disclosure register gains the same column.
`audit_ensure_partitions(months_ahead)` creates the partitions of this month and the next ones; it
runs with its owner's rights (SECURITY DEFINER), so that the application role, which may do no DDL,
can still have next month's partitions made as it writes. Creating a partition locks its parent
exclusively, so it waits at most a second for a lock (a long reader holds the parent) and gives up,
to try again later, rather than queue every ledger write behind it. Every partition refuses
TRUNCATE, and the row triggers of the parent (UPDATE, DELETE) reach every partition.

What the partitioned tables cannot keep: a key of a partitioned table must include the partition
key, so the keys are kept per month instead (each partition has its own primary key on the event id,
and a unique (chain_id, seq)): an event id or a position is unique within its month rather than
overall, and the disclosure register's foreign key to its event is gone. `gateway audit verify` checks
all three: every row of a chain is read, so a position written twice fails; an event id that appears
twice fails; a disclosure row that no event holds fails. Ids are random (UUID4).

`audit_retention` (both databases) holds, per chain, the signed head of the events a retention run
dropped, so that verification starts each chain where the dropped range ended.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Months created ahead of the current one, by the migration and by every writer once a month.
MONTHS_AHEAD = 3
# The ledger's fixed-width UTC text for "now", as the writer makes it (gateway/audit/events.py).
NOW_TEXT = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

_PARTITION_FUNCTIONS = (
    """
    CREATE FUNCTION audit_add_month(month date) RETURNS integer
    LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
    DECLARE
        parent text;
        part text;
        made integer := 0;
    BEGIN
        FOREACH parent IN ARRAY ARRAY['audit_events', 'audit_disclosures'] LOOP
            part := parent || '_' || to_char(month, '"y"YYYY"m"MM');
            IF to_regclass(part) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    part, parent, to_char(month, 'YYYY-MM'),
                    to_char((month + interval '1 month')::date, 'YYYY-MM')
                );
                EXECUTE format(
                    'CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                    'FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()',
                    part || '_no_truncate', part
                );
                -- Keys per month: a key of the parent would have to include recorded_at.
                IF parent = 'audit_events' THEN
                    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', part);
                    EXECUTE format('ALTER TABLE %I ADD UNIQUE (chain_id, seq)', part);
                ELSE
                    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (event_id, person_id)', part);
                END IF;
                made := made + 1;
            END IF;
        END LOOP;
        RETURN made;
    END $$
    """,
    """
    CREATE FUNCTION audit_ensure_partitions(months_ahead integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '1s' AS $$
    DECLARE
        first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
        made integer := 0;
    BEGIN
        IF months_ahead < 0 OR months_ahead > 24 THEN
            RAISE EXCEPTION 'months_ahead must be between 0 and 24';
        END IF;
        -- One caller at a time; the others go on writing (the months ahead exist already).
        IF NOT pg_try_advisory_xact_lock(hashtext('audit_ensure_partitions')) THEN
            RETURN 0;
        END IF;
        FOR i IN 0..months_ahead LOOP
            made := made + audit_add_month((first_month + make_interval(months => i))::date);
        END LOOP;
        RETURN made;
    END $$
    """,
)


def upgrade() -> None:
    op.create_table(
        "audit_retention",
        sa.Column("chain_id", sa.String(36), sa.ForeignKey("audit_chains.chain_id"), primary_key=True),
        sa.Column("through_seq", sa.BigInteger, primary_key=True),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("dropped_before", sa.String(7), nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("signed_at", sa.String(27), nullable=False),
        sa.Column("key_id", sa.String(100), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        _partition()
        for action in ("append_only", "no_truncate"):
            kind = "BEFORE UPDATE OR DELETE" if action == "append_only" else "BEFORE TRUNCATE"
            each = "ROW" if action == "append_only" else "STATEMENT"
            op.execute(
                f"CREATE TRIGGER audit_retention_{action} {kind} ON audit_retention "
                f"FOR EACH {each} EXECUTE FUNCTION audit_append_only()"
            )
    else:
        _sqlite_recorded_at()
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_retention_no_{action.lower()} BEFORE {action} ON audit_retention "
                "BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END"
            )


def _partition() -> None:
    for table in ("audit_events", "audit_disclosures"):
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
    op.execute(
        "ALTER TABLE audit_disclosures_unpartitioned "
        "DROP CONSTRAINT IF EXISTS audit_disclosures_event_id_fkey"
    )
    op.execute(
        "ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_pkey TO audit_events_old_pkey"
    )
    op.execute(
        "ALTER TABLE audit_events_unpartitioned "
        "RENAME CONSTRAINT uq_audit_events_chain_seq TO uq_audit_events_old_chain_seq"
    )
    op.execute(
        "ALTER TABLE audit_disclosures_unpartitioned "
        "RENAME CONSTRAINT audit_disclosures_pkey TO audit_disclosures_old_pkey"
    )
    for index in ("occurred_at", "client_id", "agreement_id"):
        op.execute(f"DROP INDEX ix_audit_events_{index}")
    op.execute("DROP INDEX ix_audit_disclosures_person_id")
    op.execute(
        f"""
        CREATE TABLE audit_events (
            id varchar(32) NOT NULL,
            chain_id varchar(36) NOT NULL REFERENCES audit_chains (chain_id),
            seq bigint NOT NULL,
            prev_hash varchar(64) NOT NULL,
            hash varchar(64) NOT NULL,
            occurred_at varchar(27) NOT NULL,
            endpoint varchar(16) NOT NULL,
            client_id varchar(64),
            agreement_id varchar(64),
            agreement_version integer,
            purpose text,
            lawful_basis text,
            decision_rule varchar(64),
            acting_user varchar(200),
            officer_issuer varchar(255),
            request_count integer,
            case_reference varchar(200),
            break_glass_reason varchar(200),
            operation_name varchar(100),
            document_sha256 varchar(64),
            fields_disclosed text NOT NULL,
            fields_withheld text NOT NULL,
            people_count integer NOT NULL,
            outcome varchar(16) NOT NULL,
            error_code varchar(64),
            http_status integer NOT NULL,
            client_address varchar(64),
            latency_us bigint NOT NULL,
            trace_id varchar(32),
            token_jti varchar(64),
            recorded_at varchar(27) COLLATE "C" NOT NULL DEFAULT {NOW_TEXT},
            CONSTRAINT ck_audit_events_seq_positive CHECK (seq > 0)
        ) PARTITION BY RANGE (recorded_at)
        """
    )
    op.execute(
        f"""
        CREATE TABLE audit_disclosures (
            event_id varchar(32) NOT NULL,
            person_id integer NOT NULL,
            fields text NOT NULL,
            recorded_at varchar(27) COLLATE "C" NOT NULL DEFAULT {NOW_TEXT}
        ) PARTITION BY RANGE (recorded_at)
        """
    )
    for index in ("occurred_at", "client_id", "agreement_id"):
        op.execute(f"CREATE INDEX ix_audit_events_{index} ON audit_events ({index})")
    # A chain's events by position, and an event's disclosures, are found through the unique keys.
    op.execute("CREATE INDEX ix_audit_disclosures_person_id ON audit_disclosures (person_id)")
    for table in ("audit_events", "audit_disclosures"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )
    for function in _PARTITION_FUNCTIONS:
        op.execute(function)
    op.execute("REVOKE ALL ON FUNCTION audit_add_month(date) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION audit_ensure_partitions(integer) FROM PUBLIC")
    # Each existing event's recorded_at: the latest occurred_at so far along its chain.
    op.execute(
        "CREATE TEMPORARY TABLE audit_recorded ON COMMIT DROP AS SELECT id, "
        "max(occurred_at) OVER (PARTITION BY chain_id ORDER BY seq) AS recorded_at "
        "FROM audit_events_unpartitioned"
    )
    # Every month that holds events, then this month and the next ones.
    op.execute(
        "SELECT audit_add_month(month) FROM (SELECT DISTINCT "
        "date_trunc('month', left(recorded_at, 10)::date)::date AS month FROM audit_recorded) m"
    )
    op.execute(f"SELECT audit_ensure_partitions({MONTHS_AHEAD})")
    # By name: columns added by later migrations stand in a different order in the old table.
    names = [
        c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit_events") if c["name"] != "recorded_at"
    ]
    columns = ", ".join(names)
    picked = ", ".join(f"e.{name}" for name in names)
    op.execute(
        f"INSERT INTO audit_events ({columns}, recorded_at) SELECT {picked}, r.recorded_at "  # noqa: S608 (column names reflected, not input)
        "FROM audit_events_unpartitioned e JOIN audit_recorded r ON r.id = e.id"
    )
    op.execute(
        "INSERT INTO audit_disclosures (event_id, person_id, fields, recorded_at) "
        "SELECT d.event_id, d.person_id, d.fields, r.recorded_at "
        "FROM audit_disclosures_unpartitioned d JOIN audit_recorded r ON r.id = d.event_id"
    )
    op.execute("DROP TABLE audit_disclosures_unpartitioned")
    op.execute("DROP TABLE audit_events_unpartitioned")


def _sqlite_recorded_at() -> None:
    """SQLite keeps the ledger whole (no partitions, no retention): the column, NULL for earlier rows."""
    op.add_column("audit_events", sa.Column("recorded_at", sa.String(27), nullable=True))
    op.add_column("audit_disclosures", sa.Column("recorded_at", sa.String(27), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the partitioned ledger is not converted back; restore a backup instead")
