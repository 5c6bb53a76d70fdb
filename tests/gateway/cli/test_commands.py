"""The `gateway` command, run in-process with click's runner against a scratch SQLite file."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "GATEWAY_SIGNING_KEY_FILE": str(tmp_path / "keys" / "signing.jwk.json"),
        "GATEWAY_REF_SECRET_FILE": str(tmp_path / "keys" / "ref-secret"),
        "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness"),
    }


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_clients_add_prints_the_secret_once_and_stores_only_its_hash(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(env, "db", "upgrade").exit_code == 0
    added = run(env, "clients", "add", "--agreement", "police-prevention", "--name", "Met CAD")
    assert added.exit_code == 0, added.output
    printed = json.loads(added.output)
    assert set(printed) == {"client_id", "client_secret", "agreement", "name", "token_endpoint"}
    assert printed["agreement"] == "police-prevention" and printed["name"] == "Met CAD"
    assert printed["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"
    assert len(printed["client_secret"]) >= 43  # 256 bits, base64url

    with sqlite3.connect(tmp_path / "cli.db") as db:
        rows = db.execute("SELECT * FROM clients").fetchall()
    assert len(rows) == 1
    assert not any(printed["client_secret"] in str(value) for value in rows[0])

    listed = run(env, "clients", "list", "--json")
    assert printed["client_secret"] not in listed.output
    [row] = json.loads(listed.output)
    assert row["client_id"] == printed["client_id"] and row["status"] == "enabled"

    assert run(env, "clients", "disable", printed["client_id"]).exit_code == 0
    [row] = json.loads(run(env, "clients", "list", "--json").output)
    assert row["status"].startswith("disabled")


def test_clients_add_refuses_an_unknown_agreement(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    result = CliRunner().invoke(main, ["clients", "add", "--agreement", "police-everything"], env=env)
    assert result.exit_code == 1
    assert "no agreement 'police-everything'" in result.output
    assert "police-prevention" in result.output
    assert json.loads(run(env, "clients", "list", "--json").output) == []


def test_disabling_an_unknown_client_fails(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    result = CliRunner().invoke(main, ["clients", "disable", "nobody-123"], env=env)
    assert result.exit_code == 1
    assert "no client 'nobody-123'" in result.output


def test_seed_is_all_or_nothing_and_refuses_a_populated_database(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "db", "upgrade")
    first = run(env, "seed", "--people", "250", "--seed", "7", "--today", "2026-11-22")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output[first.output.index("{") :])
    assert summary["people"] == 250 and summary["seed"] == 7
    again = CliRunner().invoke(main, ["seed", "--people", "10"], env=env)
    assert again.exit_code == 1
    assert "already holds 250 people" in again.output
    with sqlite3.connect(tmp_path / "cli.db") as db:
        assert db.execute("SELECT count(*) FROM people").fetchone() == (250,)


def test_policies_check_names_file_line_and_key_of_a_bad_agreement(
    env: dict[str, str], tmp_path: Path
) -> None:
    good = run(env, "policies", "check")
    assert good.exit_code == 0
    assert good.output.count("ok ") == 7

    broken = tmp_path / "agreements"
    broken.mkdir()
    source = Path(__file__).resolve().parents[3] / "policies" / "agreements" / "police-prevention.yaml"
    text = source.read_text(encoding="utf-8").replace("fields: [givenName,", "fields: [nhsNumber, givenName,")
    (broken / "police-prevention.yaml").write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("fields:"))
    result = CliRunner().invoke(
        main, ["policies", "check"], env={**env, "GATEWAY_AGREEMENTS_DIR": str(broken)}
    )
    assert result.exit_code == 1
    assert f"police-prevention.yaml:{line}: fields[0]: unknown field 'nhsNumber'" in result.output


def test_schema_export_check_passes_on_the_committed_snapshots(env: dict[str, str]) -> None:
    result = run(env, "schema", "export", "--check")
    assert result.exit_code == 0, result.output
    assert "7 view snapshots are up to date" in result.output


def test_keys_generate_writes_private_files_once(env: dict[str, str]) -> None:
    first = run(env, "keys", "generate")
    assert first.exit_code == 0
    key_file, secret_file = Path(env["GATEWAY_SIGNING_KEY_FILE"]), Path(env["GATEWAY_REF_SECRET_FILE"])
    for path in (key_file, secret_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert '"d"' in key_file.read_text() and len(secret_file.read_text().strip()) >= 32
    before = key_file.read_bytes()
    second = run(env, "keys", "generate")
    assert "nothing (both exist)" in second.output
    assert key_file.read_bytes() == before


def test_serve_refuses_to_start_without_a_signing_key(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert "GATEWAY_SIGNING_KEY_FILE" in result.output


def test_bad_settings_name_the_variable(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        main, ["policies", "check"], env={**env, "GATEWAY_ISSUER": "http://gateway.example"}
    )
    assert result.exit_code == 1
    assert "GATEWAY_ISSUER" in result.output and "https" in result.output
