"""Least privilege in PostgreSQL: a migrator role that owns the schema, an application role that
may do only what the running gateway does.

- The **migrator** (`gateway db upgrade`, `gateway audit retention`, `gateway retention run`,
  `gateway seed`) owns every table, trigger and function, because it created them.
- The **application** role (`gateway serve`, and the operator's `clients`, `documents`,
  `breakglass` commands) reads the records; on the ledger it may only SELECT and INSERT (no UPDATE,
  DELETE, TRUNCATE, no DDL, no trigger changes: a role that does not own a table cannot alter or
  disable its triggers); it changes only the tables that hold its own working state.
  Next month's ledger partitions are made through `audit_ensure_partitions`, a function that runs
  with its owner's rights and can do nothing else.

`gateway db roles --print-sql` prints what a DBA runs once as a superuser; `gateway db upgrade`, run as
the migrator with GATEWAY_DB_APP_ROLE set, grants the application role its privileges after every
migration (and revokes anything more), so a new table is never left out.
"""

from __future__ import annotations

from typing import Final

# What the application role may do on each table: every table the migrations create is listed
# (tests/gateway/test_database_roles.py holds the list to the migrated schema).
APP_PRIVILEGES: Final[dict[str, tuple[str, ...]]] = {
    # The council's records: read, and appended to only to open the record of a child a partner referred
    # whom the council did not know (resolvers.referrals): never changed or removed by this role.
    "addresses": ("SELECT", "INSERT"),
    "households": ("SELECT", "INSERT"),
    "people": ("SELECT", "INSERT"),
    # Read for subject access; `gateway retention run` purges as the migrator, never as this role.
    "person_records": ("SELECT", "INSERT"),
    "assessments": ("SELECT",),
    # Two-way sharing: partners' contributions (made pending, then recorded once their event is written)
    # and the eligibility timelines the gateway recomputes for the families they are about.
    "contributions": ("SELECT", "INSERT", "UPDATE"),
    "eligibility_intervals": ("SELECT", "INSERT", "DELETE"),
    # Referrals (matched, or decided by an officer) and partners' batches with each row's result.
    "referrals": ("SELECT", "INSERT", "UPDATE"),
    "report_keys": ("SELECT", "INSERT"),
    "id_high_water": ("SELECT", "INSERT", "UPDATE"),  # ids given to records it opens, never reused
    "batches": ("SELECT", "INSERT", "UPDATE"),
    "batch_rows": ("SELECT", "INSERT", "UPDATE"),
    # Data subjects' requests: recorded through the gateway, with the objections and restrictions
    # they put in effect and lift.
    "objections": ("SELECT", "INSERT", "DELETE"),
    "restrictions": ("SELECT", "INSERT", "DELETE"),
    "rights_requests": ("SELECT", "INSERT", "UPDATE"),
    "notifications": ("SELECT", "INSERT", "UPDATE"),  # acknowledged by the recipient
    # The text of each agreement version the gateway ran with, kept at start-up for reviews.
    "agreement_versions": ("SELECT", "INSERT"),
    # The ledger: append only.
    "audit_chains": ("SELECT", "INSERT"),
    "audit_events": ("SELECT", "INSERT"),
    "audit_disclosures": ("SELECT", "INSERT"),
    "audit_checkpoints": ("SELECT", "INSERT"),
    "audit_retention": ("SELECT",),
    # Partner registry and its working state.
    "clients": ("SELECT", "INSERT", "UPDATE"),
    "revoked_tokens": ("SELECT", "INSERT", "DELETE"),
    "trusted_documents": ("SELECT", "INSERT", "DELETE"),
    "break_glass": ("SELECT", "INSERT", "UPDATE"),
    "replay_guard": ("SELECT", "INSERT", "DELETE"),
    "shared_counters": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "shared_sets": ("SELECT", "INSERT", "DELETE"),
    # The security console: its sessions, and which alerts have left the queue (what a reader did is
    # in the ledger).
    "console_sessions": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "alert_acknowledgements": ("SELECT", "INSERT"),
    # Which migration the database is at (the gateway refuses to start on an older one).
    "alembic_version": ("SELECT",),
}
APP_FUNCTIONS: Final = ("audit_ensure_partitions(integer)",)
DEFAULT_MIGRATOR: Final = "gateway_migrator"
DEFAULT_APP: Final = "gateway_app"


def _quoted(role: str) -> str:
    return '"' + role.replace('"', '""') + '"'


def grant_statements(app_role: str) -> list[str]:
    """Revoke everything from the application role, then grant exactly APP_PRIVILEGES (idempotent)."""
    role = _quoted(app_role)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
        f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
    ]
    statements += [
        f"GRANT {', '.join(privileges)} ON TABLE {table} TO {role}"
        for table, privileges in APP_PRIVILEGES.items()
    ]
    statements += [f"GRANT EXECUTE ON FUNCTION {function} TO {role}" for function in APP_FUNCTIONS]
    return statements


def roles_sql(*, database: str, migrator: str, app: str) -> str:
    """What a DBA runs once, as a superuser, before the first `gateway db upgrade`."""
    m, a, db = _quoted(migrator), _quoted(app), _quoted(database)
    lines = [
        f"-- Partner gateway: database roles for {database}. Run once as a superuser, then set each",
        "-- role's password (\\password in psql) and put it in that role's secret only.",
        f"CREATE ROLE {m} LOGIN;",
        f"CREATE ROLE {a} LOGIN;",
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {m};",
        f"GRANT CONNECT ON DATABASE {db} TO {a};",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {m};",
        f"GRANT USAGE ON SCHEMA public TO {a};",
        "-- A database that a single role made and used until now: hand what it owns to the migrator",
        f"-- (as a superuser; <old role> is that role):  REASSIGN OWNED BY <old role> TO {m};",
        "",
        f"-- Then, as {migrator}: GATEWAY_DB_APP_ROLE={app} gateway db upgrade",
        f"-- which, after migrating, grants {app} exactly this (and revokes anything more):",
    ]
    lines += [f"--   {statement};" for statement in grant_statements(app)]
    return "\n".join(lines) + "\n"
