"""Every command that fails on a bad setting, key, database URL or state says why in one `error:`
line on stderr and exits 1; the traceback appears only with `--debug`. The real `gateway` script
is run as a subprocess, so what is checked is what an operator's terminal shows."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

from gateway.keys import SigningKeys, generate_key, write_key_file
from tests.support.databases import postgres_admin_url

GATEWAY = str(Path(sys.executable).parent / "gateway")


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, *args], env={"PATH": "/usr/bin:/bin", **env}, cwd=cwd, capture_output=True, text=True,
        errors="replace", timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    write_key_file(tmp_path / "signing.jwk.json", [generate_key()])
    return {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "GATEWAY_SIGNING_KEY_FILE": str(tmp_path / "signing.jwk.json"),
        "GATEWAY_REF_SECRET": "a ref secret that is long enough for the gateway to use",
        "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness"),
    }


@pytest.fixture
def rsa_key(tmp_path: Path) -> str:
    path = tmp_path / "rsa.jwk.json"
    path.write_text(json.dumps({"keys": [RSAKey.generate_key(2048, private=True).as_dict(private=True)]}))
    return str(path)


def _unreachable() -> str:
    from sqlalchemy.engine import make_url

    return make_url(postgres_admin_url()).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


CASES = [
    pytest.param(
        {"GATEWAY_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1:99999/x"},
        ["clients", "list"],
        "GATEWAY_DATABASE_URL: port 99999 is not a TCP port",
        id="a port that is not one",
    ),
    pytest.param(
        {"GATEWAY_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/x?colour=blue"},
        ["clients", "list"],
        "GATEWAY_DATABASE_URL: options the driver does not take: colour",
        id="a URL option the driver does not take",
    ),
    pytest.param(
        {"GATEWAY_LOG_LEVEL": "chatty"}, ["serve"], "GATEWAY_LOG_LEVEL:", id="a log level that is not one"
    ),
    pytest.param(
        {"GATEWAY_SIGNING_KEY_FILE": "UNDER_A_FILE"},
        ["keys", "generate"],
        "GATEWAY_SIGNING_KEY_FILE: cannot write there",
        id="keys generate under a file",
    ),
    pytest.param(
        {"GATEWAY_SIGNING_KEY_FILE": "A_DIRECTORY"},
        ["keys", "generate"],
        "GATEWAY_SIGNING_KEY_FILE:",
        id="keys generate into a directory",
    ),
    pytest.param(
        {"GATEWAY_DATABASE_URL": "UNREACHABLE"},
        ["db", "upgrade"],
        "the database cannot be reached",
        id="db upgrade against an unreachable database",
    ),
    pytest.param(
        {"GATEWAY_DATABASE_URL": "UNREACHABLE"},
        ["clients", "list"],
        "Connect call failed",
        id="clients list against an unreachable database",
    ),
    pytest.param(
        {"GATEWAY_DATABASE_URL": "UNREACHABLE"},
        ["audit", "verify", "--jwks", "JWKS"],
        "cannot be reached",
        id="audit verify against an unreachable database",
    ),
    pytest.param(
        {}, ["seed", "--people", "5"], "run `gateway db upgrade` first", id="seed before migrations"
    ),
    pytest.param(
        {}, ["clients", "list"], "run `gateway db upgrade` first", id="clients list before migrations"
    ),
    pytest.param({}, ["sar", "1"], "run `gateway db upgrade` first", id="sar before migrations"),
    pytest.param(
        {},
        ["audit", "close-chain", "x", "--reason", "r"],
        "run `gateway db upgrade` first",
        id="close-chain before migrations",
    ),
    pytest.param(
        {"GATEWAY_SIGNING_KEY_FILE": "RSA"},
        ["keys", "public"],
        "not a JWK set of private P-256 keys",
        id="an RSA signing key (keys public)",
    ),
    pytest.param(
        {"GATEWAY_SIGNING_KEY_FILE": "RSA"},
        ["serve", "--port", "1"],
        "the gateway signs with ES256 only",
        id="an RSA signing key (serve)",
    ),
    pytest.param(
        {"GATEWAY_SIGNING_KEY_FILE": "RSA"},
        ["audit", "verify"],
        "not a JWK set of private P-256 keys",
        id="an RSA signing key (audit verify)",
    ),
    pytest.param(
        {"GATEWAY_DATABASE_URL": "not a url"},
        ["db", "upgrade"],
        "GATEWAY_DATABASE_URL: not a database URL",
        id="a database URL that is not one",
    ),
    pytest.param(
        {"GATEWAY_DATABASE_URL": "mysql://someone:secret@db/x"},
        ["clients", "list"],
        "GATEWAY_DATABASE_URL: use sqlite+aiosqlite or postgresql+asyncpg, not mysql",
        id="a database this gateway does not speak",
    ),
    pytest.param(
        {"GATEWAY_TOKEN_TTL_SECONDS": "soon"},
        ["policies", "check"],
        "GATEWAY_TOKEN_TTL_SECONDS:",
        id="a setting of the wrong type",
    ),
    pytest.param(
        {"GATEWAY_AUDIT_WITNESS": "ftp://elsewhere/x"},
        ["db", "upgrade"],
        "GATEWAY_AUDIT_WITNESS:",
        id="a witness that is not a sink",
    ),
    pytest.param(
        {"GATEWAY_REDIS_URL": "http://secret@cache:6379"},
        ["serve", "--port", "1"],
        "GATEWAY_REDIS_URL: must be a redis://, rediss:// or unix:// URL",
        id="a Redis URL that is not one",
    ),
    pytest.param(
        {"GATEWAY_REF_SECRET": "short"},
        ["serve", "--port", "1"],
        "the ref secret must be at least 32 bytes",
        id="a short ref secret",
    ),
    pytest.param(
        {},
        ["audit", "verify", "--jwks", "JWKS", "--witness", "MISSING"],
        "no witness at",
        id="a witness path that is not",
    ),
    pytest.param(
        {},
        ["demo", "--host", "0.0.0.0", "--no-serve"],  # noqa: S104 - the address refused
        "the demo serves on a loopback address only",
        id="a demo on every address",
    ),
    pytest.param(
        {"GATEWAY_CONSOLE_OIDC_ISSUER": "https://login.council.example"},
        ["serve", "--port", "1"],
        "GATEWAY_CONSOLE_OIDC_CLIENT_ID and GATEWAY_CONSOLE_OIDC_CLIENT_SECRET together",
        id="a console sign-in half configured",
    ),
    pytest.param(
        {},
        ["evidence", "no-such-agreement", "--from", "2026-11-01", "--to", "2026-11-30"],
        "no agreement has the id 'no-such-agreement'",
        id="evidence for an agreement that is not one",
    ),
    pytest.param(
        {},
        ["evidence", "police-prevention", "--from", "2026-11-30", "--to", "2026-11-01"],
        "--to is before --from",
        id="evidence for a period that ends before it begins",
    ),
    pytest.param(
        {},
        ["rights", "list", "--case-reference", "\x1b]0;owned\x07"],
        "--case-reference: plain text of 1 to 200 characters",
        id="a case reference that would drive a terminal",
    ),
]


@pytest.mark.parametrize(("changes", "args", "expected"), CASES)
def test_a_failing_command_prints_one_error_line(
    base: dict[str, str],
    rsa_key: str,
    tmp_path: Path,
    changes: dict[str, str],
    args: list[str],
    expected: str,
) -> None:
    jwks = tmp_path / "public.json"
    jwks.write_text(json.dumps(SigningKeys.from_keys([generate_key()]).public_jwks))
    (tmp_path / "a-file").write_text("not a directory")
    substitutes = {
        "UNDER_A_FILE": str(tmp_path / "a-file" / "key.json"),
        "A_DIRECTORY": str(tmp_path),
        "UNREACHABLE": _unreachable(),
        "RSA": rsa_key,
        "JWKS": str(jwks),
        "MISSING": str(tmp_path / "x"),
    }
    env = {**base, **{k: substitutes.get(v, v) for k, v in changes.items()}}
    done = _run(env, *(substitutes.get(a, a) for a in args), cwd=tmp_path)
    assert done.returncode in (1, 2), done  # 2: click's own usage errors
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("error: ", "Error: ")), done.stderr
    assert expected in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "secret@" not in done.stderr  # a URL's password is never repeated


def test_debug_shows_the_traceback(base: dict[str, str], tmp_path: Path) -> None:
    done = _run(base, "--debug", "seed", "--people", "5", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "SchemaOutOfDateError" in done.stderr


def test_a_setting_that_is_not_utf8_is_refused_in_one_line(base: dict[str, str], tmp_path: Path) -> None:
    env: dict[bytes, bytes] = {b"PATH": b"/usr/bin:/bin", **{k.encode(): v.encode() for k, v in base.items()}}
    env[b"GATEWAY_ISSUER"] = b"https://gw\xff.example"
    done = subprocess.run(
        [GATEWAY, "policies", "check"], env=env, cwd=tmp_path, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == ["error: GATEWAY_ISSUER is not valid UTF-8"]


def test_serve_on_a_port_in_use_says_so_in_one_line(base: dict[str, str], tmp_path: Path) -> None:
    assert _run(base, "db", "upgrade", cwd=tmp_path).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(base, "serve", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use)"
    ]


def test_a_command_that_succeeds_despite_a_broken_witness_warns_in_one_line(
    base: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "not-a-directory").write_text("")
    env = {**base, "GATEWAY_AUDIT_WITNESS": str(tmp_path / "not-a-directory")}
    assert _run(env, "db", "upgrade", cwd=tmp_path).returncode == 0
    done = _run(env, "audit", "search", "--limit", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the audit witness could not be written"), lines
    assert "Traceback" not in done.stderr
