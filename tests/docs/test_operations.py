"""docs/operations.md, run as written.

Every ```sh block of the runbooks has a marker on the line before it: `<!-- ops:NAME -->` for a block
this test runs, `<!-- ops:not-run: why -->` for one it cannot (kubectl, an interactive prompt). The
runbooks are then worked through in one sitting, as an operator would: the database and roles made by
the first-install blocks, a Redis server of the test's own (so that the Redis runbook can lose it),
`gateway serve --workers 2` started from the document's own block, and a partner system in process.
Each block runs with `bash -euo pipefail` and the runbooks' variables set; after it, what it should
have done is checked: exit status, output, and the state it leaves.

Roles are cluster-wide, so every run names its own and drops them, and its databases, afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
import pytest
import yaml
from joserfc.jwk import ECKey
from prometheus_client import Counter, Histogram
from sqlalchemy.engine import make_url

from gateway.cli.client_files import new_key, public_jwks
from gateway.cli.main import main as gateway_cli
from gateway.db import head_revision
from gateway.keys import REFRESH_SECONDS
from gateway.metrics import Metrics
from policies import load_agreements
from tests.support.databases import _admin_connection, postgres_admin_url
from tests.support.identity import assertion
from tests.support.partners import ASSERTION_TYPE, proof
from tests.support.processes import free_port, stop_group

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
VENV_BIN = Path(sys.executable).parent
# What the runbooks call besides `gateway`.
TOOLS = (
    "bash", "psql", "createdb", "dropdb", "pg_dump", "pg_restore", "redis-server", "redis-cli",
    "curl", "jq", "tar",
)  # fmt: skip

# The blocks, in the order the runbooks are worked through below (`serve` twice: first install, and
# again after the restore). The document's runnable blocks are exactly these.
RUN_ORDER = (
    "create-database", "create-roles", "generate-keys", "migrate", "check-agreements",
    "trial-population", "serve", "register-partner", "register-documents", "first-check",
    "schema-revision", "upgrade", "check-grants",
    "connections", "scale-check",
    "rotate-signing-key", "archive-public-keys", "replace-partner-keys", "check-published-keys",
    "withdraw-signing-key", "check-withdrawn-key",
    "backup", "backup-check",
    "leak-disable", "leak-search", "leak-people", "leak-sar", "leak-new-client", "leak-documents",
    "audit-readyz", "audit-metrics", "audit-logs", "audit-database", "audit-regrant", "audit-partitions",
    "audit-recovered",
    "redis-diagnose", "redis-check", "redis-replay-window",
    "open-chains", "close-chain",
    "retention-dry-run", "retention-apply",
    "record-retention-dry-run", "record-retention-apply", "record-retention-apply",
    "restore", "restore-verify", "restore-lost", "restore-promote", "serve", "restore-check",
)  # fmt: skip

PAGE = "{ people(first: 2) { edges { node { ref givenName } } } }"
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[a-z]*) *$")
_MARKER = re.compile(r"^\s*<!--\s*ops:(?P<name>[a-z0-9-]+)(?::(?P<reason>.*?))?\s*-->\s*$")
_CHAIN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# -- the document ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    marker: str | None  # "not-run", a block's name, or None (no marker)
    reason: str | None = None


def blocks(text: str) -> list[Block]:
    """Every fenced block, dedented by its fence's indentation, with the marker on the line before."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = opening["indent"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        marker = _MARKER.match(lines[i - 1]) if i else None
        found.append(
            Block(
                lang=opening["lang"],
                text=body + "\n",
                line=i + 1,
                marker=marker["name"] if marker else None,
                reason=marker["reason"].strip() if marker and marker["reason"] is not None else None,
            )
        )
        i = end + 1
    return found


def runnable(text: str) -> dict[str, str]:
    return {b.marker: b.text for b in blocks(text) if b.lang == "sh" and b.marker not in (None, "not-run")}


def test_every_sh_block_is_run_or_says_why_not() -> None:
    found = [b for b in blocks(DOC.read_text(encoding="utf-8")) if b.lang == "sh"]
    assert found
    unmarked = [b.line for b in found if b.marker is None]
    assert not unmarked, f"sh blocks without an ops: marker on the line before, at lines {unmarked}"
    silent = [b.line for b in found if b.marker == "not-run" and not b.reason]
    assert not silent, f"not-run blocks that do not say why, at lines {silent}"
    named = [b.marker for b in found if b.marker != "not-run"]
    assert not [b.line for b in found if b.marker != "not-run" and b.reason is not None]
    assert len(named) == len(set(named)), "two blocks with one name"
    assert set(named) == set(RUN_ORDER), "the document's runnable blocks and the ones this test runs differ"


def _invocations(text: str) -> Iterator[list[str]]:
    """The words of each `gateway ...` command in a shell block, up to the next shell operator."""
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:
            continue  # a line of a here-document
        for i, word in enumerate(words):
            before = words[i - 1] if i else ""
            starts = not before or before in ("--", "|", "&&", "||", ";", "(", "$(") or "=" in before
            if word == "gateway" and starts:
                rest = words[i + 1 :]
                ends = next((n for n, w in enumerate(rest) if w and set(w) <= set("|&;<>()")), len(rest))
                yield rest[:ends]


def test_every_gateway_command_and_option_in_the_runbooks_exists() -> None:
    """Run or not, every `gateway` command line names commands and options the CLI has."""
    checked = 0
    for block in blocks(DOC.read_text(encoding="utf-8")):
        if block.lang != "sh":
            continue
        for words in _invocations(block.text):
            command: click.Command = gateway_cli
            rest = list(words)
            while isinstance(command, click.Group):
                assert rest, (block.line, words)
                sub = command.commands.get(rest.pop(0))
                assert sub is not None, f"line {block.line}: no command `gateway {' '.join(words)}`"
                command = sub
            options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            for word in rest:
                if word.startswith("--"):
                    assert word.split("=")[0] in options | {"--help"}, f"line {block.line}: {word} in {words}"
            checked += 1
    assert checked > 30


def test_the_links_within_the_document_lead_somewhere() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = re.findall(r"^#{2,4} (.+)$", text, re.M)
    # GitHub's anchors: lower case, punctuation but - and _ dropped, spaces to -.
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and set(links) <= anchors, set(links) - anchors


def test_the_metrics_and_alert_rules_named_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    known: set[str] = set()
    for collector in vars(Metrics()).values():
        if isinstance(collector, Counter):
            known |= {metric.name + "_total" for metric in collector.describe()}
        elif isinstance(collector, Histogram):
            suffixes = ("_bucket", "_sum", "_count")
            known |= {metric.name + s for metric in collector.describe() for s in ("", *suffixes)}
    named = set(re.findall(r"\bgateway_[a-z_]+?(?:_total|_seconds|_size|_bucket|_sum|_count)\b", text))
    assert named, "no metric named"
    assert named <= known, named - known
    rules = [yaml.safe_load(b.text) for b in blocks(text) if b.lang == "yaml"]
    exprs = [rule["expr"] for doc in rules for group in doc["groups"] for rule in group["rules"]]
    assert exprs
    for expr in exprs:
        assert set(re.findall(r"\bgateway_[a-z_]+\b", expr)) <= known, expr


# -- the operator's shell ----------------------------------------------------------------------------


@dataclass
class Redis:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while not self.answers():
            assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class Operator:
    """A shell with the runbooks' variables set, in a working directory of its own."""

    blocks: dict[str, str]
    env: dict[str, str]
    cwd: Path
    redis: Redis
    ran: list[str] = field(default_factory=list)

    def _bash(self, name: str, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.blocks[name]], cwd=self.cwd,
            env={**self.env, **variables}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def run(self, name: str, *, status: int = 0, **variables: str) -> str:
        done = self._bash(name, variables)
        self.ran.append(name)
        assert done.returncode == status, f"ops:{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def run_until(self, name: str, ok: Callable[[str], bool], *, seconds: float) -> str:
        """For a check that becomes true within seconds (a key file re-read, a connection remade)."""
        deadline = time.monotonic() + seconds
        while True:
            done = self._bash(name, {})
            if done.returncode == 0 and ok(done.stdout):
                self.ran.append(name)
                return done.stdout
            assert time.monotonic() < deadline, f"ops:{name} never passed\n{done.stdout}\n{done.stderr}"
            time.sleep(0.5)

    @contextmanager
    def serving(self, name: str) -> Iterator[Server]:
        """The block that starts the gateway, in the background until the `with` ends (SIGTERM)."""
        log = Path(self.env["GATEWAY_LOG"]).open("ab")  # noqa: SIM115 (closed in finally)
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", self.blocks[name]], cwd=self.cwd, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.ran.append(name)
        server = Server(process, self.env["BASE"], self.env["GATEWAY_LOG"])
        try:
            yield server
        finally:
            stop_group(process)
            log.close()

    def sql(self, statement: str, database: str = "postgres") -> str:
        """As the superuser, outside the runbooks: to break things, and to look."""
        done = subprocess.run(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", statement],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: str

    def ready(self) -> None:
        """Until it answers /livez (it takes a few seconds to start)."""
        deadline = time.monotonic() + 60
        while not _answers(self.base + "/livez"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start: {self.log}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the process group this test started (bash's, and so the gateway's and its workers')."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class PartnerSystem:
    """A partner's system as docs/partners.md has it: private_key_jwt, DPoP with the gateway's nonce."""

    base: str
    issuer: str
    key: ECKey = field(default_factory=new_key)
    dpop_key: ECKey = field(default_factory=new_key)
    client_id: str = ""
    nonce: str | None = None

    def token_response(self) -> httpx.Response:
        endpoint = self.issuer + "/oauth/token"
        for _ in range(3):
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion(self.client_id, self.key, endpoint),
            }
            dpop = proof(self.dpop_key, "POST", endpoint, nonce=self.nonce)
            response = httpx.post(f"{self.base}/oauth/token", data=form, headers={"DPoP": dpop}, timeout=30)
            self.nonce = response.headers.get("dpop-nonce", self.nonce)
            if response.status_code != 400 or response.json().get("error") != "use_dpop_nonce":
                return response
        return response

    def token(self) -> str:
        response = self.token_response()
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def query(self, token: str) -> httpx.Response:
        endpoint = self.issuer + "/graphql"
        for _ in range(2):
            headers = {
                "Authorization": f"DPoP {token}",
                "DPoP": proof(self.dpop_key, "POST", endpoint, token=token, nonce=self.nonce),
            }
            response = httpx.post(f"{self.base}/graphql", json={"query": PAGE}, headers=headers, timeout=30)
            self.nonce = response.headers.get("dpop-nonce", self.nonce)
            if "use_dpop_nonce" not in response.headers.get("www-authenticate", ""):
                return response
        return response


def _code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def _write_jwks(path: Path, *keys: ECKey) -> None:
    path.write_text(json.dumps(public_jwks(*keys)), encoding="utf-8")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def _postgres_reachable() -> None:
    await (await _admin_connection()).close()  # skips (or, under CI, fails) when it is not


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Operator]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"not installed, so docs/operations.md was not run: {', '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    asyncio.run(_postgres_reachable())
    admin = make_url(postgres_admin_url())
    suffix = secrets.token_hex(4)
    database, migrator, app = f"gw_ops_{suffix}", f"gw_ops_migrator_{suffix}", f"gw_ops_app_{suffix}"
    port, redis_port = free_port(), free_port()

    def url(role: str, name: str = database) -> str:
        return admin.set(username=role, password=None, database=name).render_as_string(hide_password=False)

    names = ("secrets", "witness", "key-records", "backups", "tmp", "redis")
    places = {name: tmp_path / name for name in names}
    for place in ("key-records", "backups", "tmp", "redis"):
        places[place].mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(places["tmp"]),  # the metrics directory a killed `serve` leaves behind
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGUSER": admin.username or "postgres",
        **({"PGPASSWORD": admin.password} if admin.password else {}),
        "DB_NAME": database,
        "MIGRATOR_ROLE": migrator,
        "APP_ROLE": app,
        "MIGRATOR_URL": url(migrator),
        "APP_URL": url(app),
        "GATEWAY_DATABASE_URL": url(app),
        "GATEWAY_SIGNING_KEY_FILE": str(places["secrets"] / "signing-key.jwk.json"),
        "GATEWAY_REF_SECRET_FILE": str(places["secrets"] / "ref-secret"),
        "GATEWAY_AUDIT_WITNESS": str(places["witness"]),
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "GATEWAY_ISSUER": f"http://127.0.0.1:{port}",
        "GATEWAY_METRICS_TOKEN": secrets.token_urlsafe(24),
        "PORT": str(port),
        "BASE": f"http://127.0.0.1:{port}",
        "GATEWAY_LOG": str(tmp_path / "gateway.log"),
        "KEY_RECORDS": str(places["key-records"]),
        "BACKUP_DIR": str(places["backups"]),
        "RESTORED_DB": f"{database}_restored",
        "RESTORED_APP_URL": url(app, f"{database}_restored"),
        "DAMAGED_DB": f"{database}_damaged",
        "INCIDENT": "INC-0042",
        "CHANGE_REF": "CHG-0117",
    }
    redis = Redis(redis_port, places["redis"])
    redis.start()
    operator = Operator(runnable(DOC.read_text(encoding="utf-8")), env, work, redis)
    try:
        yield operator
    finally:
        redis.stop()
        # Whatever the runbooks made under this run's names: databases first (the roles own them).
        ours = f"LIKE 'gw\\_ops\\_%{suffix}%'"
        for name in operator.sql(f"SELECT datname FROM pg_database WHERE datname {ours}").split():
            operator.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for name in operator.sql(f"SELECT rolname FROM pg_roles WHERE rolname {ours}").split():
            operator.sql(f'DROP ROLE IF EXISTS "{name}"')


# -- the runbooks, in one sitting ------------------------------------------------------------------


def test_the_runbooks_run_as_written(operator: Operator) -> None:
    op, env, work = operator, operator.env, operator.cwd
    app, database = env["APP_ROLE"], env["DB_NAME"]

    # 1. First install.
    op.run("create-database")
    assert op.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'") == "1"
    op.run("create-roles")
    roles = f"'{app}', '{env['MIGRATOR_ROLE']}'"
    logins = f"SELECT count(*) FROM pg_roles WHERE rolcanlogin AND rolname IN ({roles})"
    assert op.sql(logins) == "2"
    op.run("generate-keys")
    key_file = Path(env["GATEWAY_SIGNING_KEY_FILE"])
    assert key_file.stat().st_mode & 0o077 == 0
    first_kid = json.loads(key_file.read_text())["keys"][0]["kid"]
    [record] = Path(env["KEY_RECORDS"]).glob("jwks-*.json")
    assert [k["kid"] for k in json.loads(record.read_text())["keys"]] == [first_kid]
    assert "d" not in json.loads(record.read_text())["keys"][0]  # public halves only
    migrated = op.run("migrate")
    assert migrated.strip() == f"database is up to date; {app} granted what the gateway needs"
    assert "ok ons-evaluation@" in op.run("check-agreements")
    assert json.loads(op.run("trial-population"))["people"] == 1000

    with op.serving("serve") as server:
        # The partner is registered while the gateway starts, as from a second terminal.
        ons = PartnerSystem(env["BASE"], env["GATEWAY_ISSUER"])
        _write_jwks(work / "ons-pipeline.jwks.json", ons.key)
        (work / "ons-people-page.graphql").write_text(PAGE, encoding="utf-8")
        registered = json.loads(op.run("register-partner"))
        assert registered["agreement"] == "ons-evaluation"
        assert registered["token_endpoint"] == env["GATEWAY_ISSUER"] + "/oauth/token"
        ons.client_id = env["CLIENT_ID"] = registered["client_id"]
        [document] = op.run("register-documents").splitlines()
        assert document.startswith("sha256:") and "  registered" in document
        server.ready()
        checked = op.run_until("first-check", lambda out: out.startswith("{"), seconds=15)
        readiness, metrics = checked.splitlines()
        ready = json.loads(readiness)
        assert ready["status"] == "ready"
        assert ready["checks"] == {"database": "ok", "ledger": "ok", "redis": "ok", "agreements": "ok"}
        assert ready["agreements"]["loaded"] == len(load_agreements()) and ready["agreements"]["in_force"] > 0
        assert metrics == "gateway_audit_failures_total 0.0"
        answered = ons.query(ons.token())
        assert answered.status_code == 200, answered.text
        assert len(answered.json()["data"]["people"]["edges"]) == 2

        # 2. Migrations: where the schema is, the upgrade again, and the grants it leaves.
        assert op.run("schema-revision").strip() == head_revision()
        assert op.run("upgrade").startswith("database is up to date")
        assert op.run("check-grants").strip() == "t|f|t"

        # 4. Scaling: the connections each role holds, and the instance ready with Redis.
        held = op.run("connections")
        assert re.search(rf"^ {app} +\| +\d+$", held, re.M), held
        assert re.search(r"^\d+$", held, re.M)
        scaled = op.run("scale-check")
        assert scaled.startswith("true\n")
        assert 'endpoint="graphql",outcome="allowed",status="200"' in scaled

        # 3. Key rotation: the gateway's key (published by the running processes without a restart),
        # its public halves kept, and the partner's own keys replaced.
        rotated = op.run("rotate-signing-key")
        keys_now = json.loads(key_file.read_text())
        new_kid = keys_now["keys"][0]["kid"]
        assert new_kid != first_kid
        assert f"{new_kid} signs from" in rotated and f"when {first_kid} retires" in rotated
        op.run("archive-public-keys")
        assert (Path(env["KEY_RECORDS"]) / f"{first_kid}.json").is_file()
        assert {k["kid"] for k in json.loads(record.read_text())["keys"]} == {first_kid, new_kid}
        next_key = new_key()
        _write_jwks(work / "ons-pipeline-next.jwks.json", ons.key, next_key)
        replaced = op.run("replace-partner-keys")
        assert replaced.strip() == f"{ons.client_id}: keys {ons.key.kid}, {next_key.kid}"
        ons.key = next_key
        assert ons.query(ons.token()).status_code == 200
        published = op.run_until("check-published-keys", lambda out: new_kid in out.split(), seconds=15)
        assert set(published.split()) == {first_kid, new_kid}

        # 3. The signing key leaked: withdrawn at once, its tokens refused, its public half kept.
        env["LEAKED_KID"] = first_kid
        signed_by_leaked = ons.token()
        assert _kid(signed_by_leaked) == first_kid
        op.run("withdraw-signing-key")
        kept = [k["kid"] for k in json.loads(key_file.read_text())["keys"]]
        assert first_kid not in kept and new_kid in kept and len(kept) == 2
        third_kid = kept[0]
        assert third_kid in {k["kid"] for k in json.loads(record.read_text())["keys"]}
        assert (Path(env["KEY_RECORDS"]) / f"{first_kid}.json").is_file()
        withdrawn = time.monotonic()
        op.run_until("check-withdrawn-key", lambda out: out.strip() == "true", seconds=15)
        # Every worker has read the key file again once REFRESH_SECONDS have passed since it changed.
        time.sleep(max(0.0, withdrawn + REFRESH_SECONDS + 0.5 - time.monotonic()))
        refused = ons.query(signed_by_leaked)
        assert (refused.status_code, _code(refused)) == (401, "UNAUTHENTICATED")
        assert {_kid(ons.token()) for _ in range(4)} == {third_kid}

        # 6. Backup, checked at once by restoring it and verifying it strictly against its witness copy.
        backed_up = op.run("backup")
        stamp = re.fullmatch(r"backup (\d{8}T\d{6}Z)\n", backed_up)
        assert stamp is not None, backed_up
        env["BACKUP_STAMP"] = stamp[1]
        backups = Path(env["BACKUP_DIR"])
        for kind in ("witness-{}.tar.gz", "gateway-{}.dump", "keys-{}.tar.gz"):
            assert (backups / kind.format(stamp[1])).stat().st_size > 0
        checked = op.run("backup-check")
        assert re.search(r"^ledger intact: \d+ chains, \d+ events and the witness agrees$", checked, re.M)
        assert op.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{env['RESTORED_DB']}'") == "0"

        # 9. A leaked partner key: what the attacker's token got, then the disable, the trail, the people.
        env["LEAK_FROM"] = _now()
        live = ons.token()
        assert ons.query(live).status_code == 200
        assert op.run("leak-disable").strip() == f"disabled {ons.client_id}"
        refused = ons.query(live)
        assert (refused.status_code, _code(refused)) == (401, "UNAUTHENTICATED")
        no_token = ons.token_response()
        assert (no_token.status_code, no_token.json()["error"]) == (401, "invalid_client")
        trail = op.run("leak-search")
        assert re.search(r"\tgraphql\tallowed\t200\t127\.0\.0\.1\t2$", trail, re.M), trail
        assert re.search(r"\tgraphql\tdenied\t401\t127\.0\.0\.1\t0$", trail, re.M), trail
        assert re.search(r"\ttoken\tdenied\t401\t", trail, re.M), trail
        people = op.run("leak-people").splitlines()
        assert people[0] == "person_id,fields,occurred_at,client_address"
        assert len(people) == 3, people  # the two people of the one page the leaked token read
        person = people[1].split(",")[0]
        report = json.loads(op.run("leak-sar", PERSON_ID=person))
        assert report["person_id"] == int(person)
        assert "ons-evaluation" in {d["agreement"] for d in report["disclosures"]}
        renewed = PartnerSystem(env["BASE"], env["GATEWAY_ISSUER"])
        _write_jwks(work / "ons-pipeline-new.jwks.json", renewed.key)
        renewed.client_id = env["NEW_CLIENT_ID"] = json.loads(op.run("leak-new-client"))["client_id"]
        assert renewed.client_id != ons.client_id
        carried = op.run("leak-documents")
        assert carried.startswith(document.split()[0] + "  registered"), (carried, document)
        assert renewed.query(renewed.token()).status_code == 200

        # 7. AUDIT_UNAVAILABLE: the application role loses INSERT on the ledger (a DBA's slip).
        token = renewed.token()
        op.sql(f'REVOKE INSERT ON audit_events FROM "{app}"', database)
        refused = renewed.query(token)
        assert (refused.status_code, _code(refused)) == (503, "AUDIT_UNAVAILABLE")
        assert refused.headers["retry-after"] == "5" and "data" not in refused.json()
        assert '"ledger":"failed"' in op.run("audit-readyz")
        counted = op.run("audit-metrics")
        failures = re.search(r"^gateway_audit_failures_total (\d+)\.0$", counted, re.M)
        assert failures is not None and int(failures[1]) >= 1, counted
        assert 'outcome="audit_unavailable"' in counted
        logged = [json.loads(line) for line in op.run("audit-logs").splitlines()]
        failed = {"message": "audit ledger write failed", "error_type": "ProgrammingError"}
        assert any(failed.items() <= line.items() for line in logged), logged
        refusal = {"message": "request refused: the audit ledger is unavailable", "endpoint": "graphql"}
        assert any({**refusal, "client_id": renewed.client_id}.items() <= line.items() for line in logged)
        looked = op.run("audit-database")
        assert re.search(r"^ audit_events +\| f$", looked, re.M), looked
        assert re.search(r"^ audit_chains +\| t$", looked, re.M), looked
        month = datetime.now(UTC).strftime("audit_events_y%Ym%m")
        assert re.search(rf"^ {month}$", looked, re.M), looked
        op.run("audit-regrant")
        assert op.run("audit-partitions").strip() == "0"  # this month and the next three were there
        assert renewed.query(renewed.token()).status_code == 200
        recovered = op.run("audit-recovered")
        assert recovered.startswith("true\n") and "and the witness agrees" in recovered

        # 8. Redis lost, then back empty.
        env["REDIS_LOST_AT"] = _now()
        token = renewed.token()
        op.redis.stop()
        refused = renewed.query(token)
        assert (refused.status_code, _code(refused)) == (503, "DATABASE_UNAVAILABLE")
        diagnosed = op.run("redis-diagnose")
        assert '"redis":"failed"' in diagnosed and '"status":"unready"' in diagnosed
        assert diagnosed.rstrip().endswith("Redis does not answer")
        op.redis.start()
        came_back = op.run_until("redis-check", lambda out: out.startswith("PONG\ntrue\n"), seconds=15)
        assert "aof_enabled:0" in came_back
        for _ in range(20):  # a pooled connection that died with Redis answers 503 once
            issued = renewed.token_response()
            if issued.status_code != 503:
                break
            time.sleep(0.1)
        assert issued.status_code == 200, issued.text
        window = op.run("redis-replay-window")
        assert re.search(rf"\t{renewed.client_id}\t127\.0\.0\.1$", window, re.M), window

        # 4. Scaling in: the instance killed outright, so its workers' chains stay open.
        server.kill()
    deadline = time.monotonic() + 10
    while op.sql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{app}'") != "0":
        assert time.monotonic() < deadline, "the killed gateway's sessions did not end"
        time.sleep(0.1)
    listed = op.run("open-chains")
    dead = [_CHAIN_ID.search(line)[0] for line in listed.splitlines() if re.search(r"\| gateway +\|", line)]
    assert dead, listed
    sealed = op.run("close-chain", CHAIN_ID=dead[0])
    assert sealed.startswith(f"sealed chain {dead[0]} at event ")
    abandoned = f"SELECT abandoned FROM audit_checkpoints WHERE chain_id = '{dead[0]}' AND final"
    assert "instance killed during scale-in" in op.sql(abandoned, database)

    # 5. Retention: nothing is seven years old yet, and both runs say so.
    planned = json.loads(op.run("retention-dry-run"))
    assert planned["applied"] is False and planned["months_kept"] == 84 and planned["months_dropped"] == []
    assert json.loads(op.run("retention-apply"))["applied"] is True

    # 5b. Record retention: the trial population has people past their schedules; the dry run counts
    # them and deletes no one, the run with --apply purges exactly them, and a second finds no one.
    people = "SELECT count(*) FROM people"
    before = int(op.sql(people, database))
    dry = op.run("record-retention-dry-run")
    due = int(re.search(r"DRY RUN: nothing deleted; (\d+) (?:person|people) due", dry)[1])
    assert due > 0 and int(op.sql(people, database)) == before, dry
    purged = op.run("record-retention-apply").splitlines()[-1]
    assert purged.startswith(f"purged {due} people, and "), purged
    assert int(op.sql(people, database)) == before - due
    assert op.run("record-retention-apply").splitlines()[-1] == "purged nothing: nobody was due"

    # 6. Restore: the backup taken above, verified against its own witness copy; against the live
    # witness, what happened since is listed as lost; then swapped in, served and verified.
    op.run("restore")
    acl = op.sql(f"SELECT datacl FROM pg_database WHERE datname = '{env['RESTORED_DB']}'")
    assert f"{app}=c/" in acl and not re.search(r"[{,]=", acl), acl  # PUBLIC may no longer connect
    verified = op.run("restore-verify")
    assert verified.rstrip().endswith("and the witness agrees"), verified
    lost = op.run("restore-lost", status=1)
    assert "is not in the database (deleted with its events)" in lost, lost
    assert (Path(env["BACKUP_DIR"]) / f"restore-{stamp[1]}" / "lost-since-backup.txt").read_text() == lost
    op.run("restore-promote")
    ours = f"SELECT datname FROM pg_database WHERE datname LIKE '{database}%' ORDER BY datname"
    assert op.sql(ours).split() == sorted([database, env["DAMAGED_DB"]])
    with op.serving("serve") as server:
        server.ready()
        restored = op.run("restore-check")
    assert restored.startswith("true\n")
    assert "sealed by gateway start-up" in restored  # the restored chains whose writers were gone
    assert re.search(r"^ledger intact: \d+ chains, \d+ events$", restored, re.M), restored

    assert op.ran == list(RUN_ORDER)
