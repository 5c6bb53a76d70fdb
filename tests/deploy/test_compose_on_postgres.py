"""compose.yaml's database set-up and settings, run outside Docker against the test PostgreSQL and Redis.

No Docker engine is needed: postgres-init/roles.sh runs as the postgres image runs it (the superuser,
POSTGRES_USER and POSTGRES_DB set), and the gateway commands run with the environment compose gives
each service, only the host names, paths and role names moved to this machine. Roles are
cluster-wide, so every run names its own and drops them afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.deploy import dockerfile
from tests.deploy.manifests import DEPLOY, compose
from tests.support.databases import postgres_admin_url, postgres_database, redis_url
from tests.support.processes import GATEWAY, free_port, running

pytestmark = pytest.mark.postgres

ROLES_SCRIPT = DEPLOY / "postgres-init" / "roles.sh"
# Compose's ${VAR:?...} values for this run; quotes and a backslash, because the script must pass them
# to psql as variables, never as SQL text (they go into URLs only where compose puts them).
PASSWORDS = {"MIGRATOR_DB_PASSWORD": "it's a \\ test", "APP_DB_PASSWORD": 'say "when"'}


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _psql() -> str:
    psql = shutil.which("psql")
    if psql is None:
        message = "psql is not installed: the roles script was not run"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return psql


@dataclass(frozen=True)
class Roles:
    migrator: str
    app: str


@asynccontextmanager
async def _roles_dropped_afterwards() -> AsyncIterator[Roles]:
    suffix = secrets.token_hex(4)
    roles = Roles(f"deploy_test_migrator_{suffix}", f"deploy_test_app_{suffix}")
    try:
        yield roles
    finally:
        admin = await asyncpg.connect(_dsn(postgres_admin_url()))
        try:
            for role in (roles.migrator, roles.app):
                await admin.execute(f'DROP ROLE IF EXISTS "{role}"')  # ours, made above: no objects left
        finally:
            await admin.close()


def _run_roles_script(url: str, roles: Roles) -> subprocess.CompletedProcess[str]:
    target = make_url(url)
    env = {
        **os.environ,
        "PATH": f"{Path(_psql()).parent}:{os.environ.get('PATH', '')}",
        "PGHOST": target.host or "127.0.0.1",
        "PGPORT": str(target.port or 5432),
        "POSTGRES_USER": target.username or "postgres",
        "POSTGRES_DB": target.database or "",
        "MIGRATOR_DB_ROLE": roles.migrator,
        "APP_DB_ROLE": roles.app,
        **PASSWORDS,
    }
    if target.password:
        env["PGPASSWORD"] = target.password
    return subprocess.run([str(ROLES_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


async def _grants(url: str, roles: Roles) -> dict[str, Any]:
    """Role attributes and the database's and schema public's ACLs, with the role names made generic."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        attributes = {}
        for label, role in (("migrator", roles.migrator), ("app", roles.app)):
            row = await conn.fetchrow(
                "SELECT rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolreplication, "
                "rolbypassrls FROM pg_roles WHERE rolname = $1",
                role,
            )
            assert row is not None, f"role {role} was not created"
            attributes[label] = dict(row)
        database_acl = await conn.fetchval(
            "SELECT datacl::text[] FROM pg_database WHERE datname = current_database()"
        )
        schema_acl = await conn.fetchval("SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'public'")
    finally:
        await conn.close()

    def generic(acl: list[str]) -> list[str]:
        return sorted(
            re.sub(rf"\b{roles.migrator}\b", "MIGRATOR", re.sub(rf"\b{roles.app}\b", "APP", item))
            for item in acl
        )

    return {
        "attributes": attributes,
        "database": generic(database_acl),
        "schema": generic(schema_acl),
    }


def _apply_printed_roles(url: str, roles: Roles) -> None:
    """`gateway db roles --print-sql` for `roles`, run by psql as the superuser, as a DBA would."""
    target = make_url(url)
    names = ["--migrator-role", roles.migrator, "--app-role", roles.app, "--database", target.database or ""]
    printed = subprocess.run(
        [GATEWAY, "db", "roles", "--print-sql", *names],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )
    assert printed.returncode == 0, printed.stderr
    server = ["-h", target.host or "127.0.0.1", "-p", str(target.port or 5432)]
    login = ["-U", target.username or "postgres", "-d", target.database or ""]
    applied = subprocess.run(
        [_psql(), "--no-psqlrc", "--set", "ON_ERROR_STOP=1", *server, *login],
        input=printed.stdout,
        env={**os.environ, "PGPASSWORD": target.password or ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr


async def test_roles_script_grants_what_gateway_db_roles_prints() -> None:
    """The compose init script and the gateway's own `db roles --print-sql` leave the same grants."""
    _psql()
    async with (
        _roles_dropped_afterwards() as scripted,
        _roles_dropped_afterwards() as printed,
        postgres_database() as script_db,
        postgres_database() as printed_db,
    ):
        done = _run_roles_script(script_db, scripted)
        assert done.returncode == 0, done.stderr
        _apply_printed_roles(printed_db, printed)

        by_script, by_gateway = await _grants(script_db, scripted), await _grants(printed_db, printed)
        assert by_script["attributes"] == by_gateway["attributes"]
        assert by_script["schema"] == by_gateway["schema"]
        assert by_script["database"] == by_gateway["database"]
        assert any(item.startswith("APP=c/") for item in by_script["database"]), by_script
        assert {"MIGRATOR=UC/", "APP=U/"} <= {i.split("/")[0] + "/" for i in by_script["schema"]}

        # Both passwords were set, and a second run fails loudly rather than half-applying (the
        # image runs it once, on an empty data directory).
        conn = await asyncpg.connect(_dsn(postgres_admin_url()))
        try:
            with_password = await conn.fetchval(
                "SELECT count(*) FROM pg_authid WHERE rolname = ANY($1::text[]) AND rolpassword IS NOT NULL",
                [scripted.migrator, scripted.app],
            )
        finally:
            await conn.close()
        assert with_password == 2
        again = _run_roles_script(script_db, scripted)
        assert again.returncode != 0 and "already exists" in again.stderr


def _interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}, from `given` only (not this process's environment)."""

    def one(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in given:
            return given[name]
        assert operator == ":-", f"${{{name}}} is required and was not given"
        return rest

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


@dataclass(frozen=True)
class Here:
    """Where compose's names are on this machine."""

    database_url: str  # the throwaway database, as the admin URL names its server
    redis: str
    directory: Path
    roles: Roles

    def env(self, service: dict[str, Any]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "OTEL_")) and k not in {"VIRTUAL_ENV"}
        }
        renamed = {"gateway_migrator": self.roles.migrator, "gateway_app": self.roles.app}
        paths = {
            "/var/lib/gateway/witness": str(self.directory / "witness"),
            "/etc/gateway/partner-jwks": str(self.directory / "partner-jwks"),
            "/run/secrets/signing_key": str(self.directory / "signing-key.jwk.json"),
            "/run/secrets/ref_secret": str(self.directory / "ref-secret"),
        }
        for key, raw in service["environment"].items():
            value = _interpolate(str(raw), PASSWORDS)
            if key == "GATEWAY_DATABASE_URL":
                url = make_url(value)
                assert (url.host, url.port, url.database) == ("postgres", 5432, "gateway"), value
                server = make_url(self.database_url)
                value = url.set(
                    username=renamed[url.username or ""],
                    host=server.host,
                    port=server.port,
                    database=server.database,
                ).render_as_string(hide_password=False)
            elif key == "GATEWAY_REDIS_URL":
                assert value == "redis://redis:6379/0"
                value = self.redis
            elif key == "GATEWAY_DB_APP_ROLE":
                value = renamed[value]
            elif key.startswith("OTEL_"):
                continue  # no collector here
            env[key] = paths.get(value, value)
        env["OTEL_SDK_DISABLED"] = "true"
        return env


def _start(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [GATEWAY, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> str:
    """Wait for a command started with _start; it must succeed. Returns what it printed."""
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, (process.args, stdout, stderr)
    return stdout


def _check_ready(healthcheck: list[str], env: dict[str, str], port: int) -> None:
    healthy = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=10)
    assert healthy.returncode == 0, healthy.stderr
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert (ready.status_code, ready.json()["status"]) == (200, "ready"), ready.text
    assert ready.json()["checks"]["redis"] == "ok", "Redis is configured, so /readyz asks it"


@pytest.mark.e2e
async def test_compose_settings_migrate_as_migrator_and_serve_as_app(tmp_path: Path) -> None:
    """roles.sh, then migrate's environment, then gateway-1's (two workers, Redis) with the image's CMD, then
    compose's healthcheck against it; the ledger belongs to the migrator and the app role cannot rewrite it;
    retention's environment runs its dry run."""
    _psql()
    services = compose()["services"]
    shared_redis = await redis_url()
    async with _roles_dropped_afterwards() as roles, postgres_database() as url:
        done = _run_roles_script(url, roles)
        assert done.returncode == 0, done.stderr
        here = Here(url, shared_redis, tmp_path, roles)
        (tmp_path / "partner-jwks").mkdir()

        # The operator's first step (deploy/secrets/README.md), beside what `docker compose up` runs.
        gateway_env = here.env(services["gateway-1"])
        keys = _start(gateway_env, tmp_path, "keys", "generate")
        _finish(_start(here.env(services["migrate"]), tmp_path, *services["migrate"]["command"]))
        _finish(keys)

        runtime = dockerfile.parse()[-1]
        port = free_port()
        cmd = dockerfile.exec_form(runtime.one("CMD").arguments)
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        cmd[cmd.index("--port") + 1] = str(port)
        check = [
            p.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/")
            for p in services["gateway-1"]["healthcheck"]["test"]
        ]
        assert check[0] == "CMD"
        with running([GATEWAY, *cmd], gateway_env, tmp_path, port):
            # Retention's dry run, as the migrator, while a gateway serves (as the CronJob would).
            retention = _start(
                here.env(services["retention"]),
                tmp_path,
                *services["retention"]["command"],
                "--acting-user",
                "deploy-test",
                "--case-reference",
                "DEPLOY-TEST",
            )
            _check_ready(check[1:], gateway_env, port)
            _finish(retention)

        conn = await asyncpg.connect(_dsn(url))
        try:
            owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events'")
            privileges = await conn.fetchrow(
                "SELECT has_table_privilege($1, 'audit_events', 'INSERT') AS insert, "
                "has_table_privilege($1, 'audit_events', 'UPDATE') AS update, "
                "has_table_privilege($1, 'audit_events', 'DELETE') AS delete",
                roles.app,
            )
        finally:
            await conn.close()
        assert owner == roles.migrator
        assert dict(privileges or {}) == {"insert": True, "update": False, "delete": False}
