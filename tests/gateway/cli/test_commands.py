"""The `gateway` command, run in-process with click's runner against a scratch SQLite file."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from joserfc.jwk import ECKey

from gateway.cli import main
from gateway.keys import (
    RETIREMENT,
    SIGNS_AFTER,
    KeysNow,
    archive_directory,
    generate_key,
    load_key_file,
    read_key_file,
    rotate_key_file,
)
from policies import load_agreements
from tests.support.identity import jwks, new_key


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


def _public_jwks(tmp_path: Path, name: str = "partner.jwks.json") -> tuple[Path, ECKey]:
    key = new_key()
    path = tmp_path / name
    path.write_text(json.dumps(jwks(key)))
    return path, key


def _client_rows(tmp_path: Path) -> list[tuple[str, str, str | None, str | None]]:
    with sqlite3.connect(tmp_path / "cli.db") as db:
        return db.execute("SELECT client_id, agreement_id, jwks, secret_hash FROM clients").fetchall()


def test_clients_add_registers_the_partners_public_keys_and_no_secret(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(env, "db", "upgrade").exit_code == 0
    jwks_file, key = _public_jwks(tmp_path)
    added = run(
        env,
        "clients",
        "add",
        "--agreement",
        "police-prevention",
        "--name",
        "Met CAD",
        "--jwks",
        str(jwks_file),
    )
    assert added.exit_code == 0, added.output
    printed = json.loads(added.output)
    assert set(printed) == {"client_id", "agreement", "name", "token_endpoint", "authentication"}
    assert printed["agreement"] == "police-prevention" and printed["name"] == "Met CAD"
    assert printed["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"
    assert printed["authentication"] == "private_key_jwt"

    [(client_id, agreement, stored, secret_hash)] = _client_rows(tmp_path)
    assert (client_id, agreement, secret_hash) == (printed["client_id"], "police-prevention", None)
    assert stored is not None
    [stored_key] = json.loads(stored)["keys"]
    assert stored_key["kid"] == key.kid and stored_key["alg"] == "ES256"
    assert stored_key["x"] == key.as_dict()["x"] and "d" not in stored_key

    listed = run(env, "clients", "list", "--json")
    [row] = json.loads(listed.output)
    assert row["client_id"] == printed["client_id"] and row["status"] == "enabled"

    assert run(env, "clients", "disable", printed["client_id"]).exit_code == 0
    [row] = json.loads(run(env, "clients", "list", "--json").output)
    assert row["status"].startswith("disabled")


def test_clients_add_with_a_client_file_keeps_the_private_halves_out_of_the_database(
    env: dict[str, str], tmp_path: Path
) -> None:
    run(env, "db", "upgrade")
    client_file = tmp_path / "partners" / "ons.json"
    added = run(env, "clients", "add", "--agreement", "ons-evaluation", "--client-file", str(client_file))
    assert added.exit_code == 0, added.output
    printed = json.loads(added.output)
    assert printed["client_file"] == str(client_file)
    assert stat.S_IMODE(client_file.stat().st_mode) == 0o600
    written = json.loads(client_file.read_text())
    assert written["client_id"] == printed["client_id"] and written["agreement"] == "ons-evaluation"
    assert written["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"
    assert {"d", "x", "y"} <= set(written["key"]) and {"d", "x", "y"} <= set(written["dpop_key"])
    [(_, _, stored, _)] = _client_rows(tmp_path)
    assert stored is not None
    [stored_key] = json.loads(stored)["keys"]
    assert stored_key["x"] == written["key"]["x"], "the gateway holds the assertion key's public half"
    assert written["key"]["d"] not in stored and written["dpop_key"]["x"] not in stored

    again = CliRunner().invoke(
        main, ["clients", "add", "--agreement", "ons-evaluation", "--client-file", str(client_file)], env=env
    )
    assert again.exit_code == 1
    assert again.output == f"error: {client_file} exists: a client file is written once, to a new path\n"
    assert json.loads(client_file.read_text()) == written, "the first partner's keys are not overwritten"
    assert len(_client_rows(tmp_path)) == 1


def test_a_client_file_that_cannot_be_written_leaves_no_client(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "db", "upgrade")
    locked = tmp_path / "locked"
    locked.write_text("a file where the client file's folder would be")  # refuses even root
    result = CliRunner().invoke(
        main,
        ["clients", "add", "--agreement", "ons-evaluation", "--client-file", str(locked / "c.json")],
        env=env,
    )
    assert result.exit_code == 1
    assert (
        result.output.startswith(f"error: cannot write {locked / 'c.json'} (")
        and "no client added" in result.output
    )
    assert _client_rows(tmp_path) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give exactly one of --jwks, --client-file and --secret"),
        (
            ["--secret"],
            "agreement police-prevention does not allow client_secret_basic (it allows private_key_jwt)",
        ),
        (["--jwks", "{private}"], "a private or symmetric key: register the public half only"),
        (["--jwks", "{hs256}"], "a private or symmetric key: register the public half only"),
        (["--jwks", "{p384}"], "an EC key must be on P-256"),
        (["--jwks", "{no kid}"], "every key needs its own kid"),
        (["--jwks", "{not json}"], "is not JSON"),
        (["--jwks", "{missing}"], "cannot read"),
    ],
)
def test_clients_add_refuses_what_would_not_authenticate_and_adds_nothing(
    arguments: list[str], message: str, env: dict[str, str], tmp_path: Path
) -> None:
    run(env, "db", "upgrade")
    key = new_key()
    files = {
        "{private}": {"keys": [{**key.as_dict(private=True), "alg": "ES256"}]},
        "{hs256}": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"}]},
        "{p384}": {"keys": [{**ECKey.generate_key("P-384").as_dict(private=False), "kid": "k"}]},
        "{no kid}": {"keys": [{k: v for k, v in key.as_dict(private=False).items() if k != "kid"}]},
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "{not json}").write_text("{keys")
    wanted = [str(tmp_path / a) if a.startswith("{") else a for a in arguments]
    result = CliRunner().invoke(
        main, ["clients", "add", "--agreement", "police-prevention", *wanted], env=env
    )
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("error: ") and message in line
    assert _client_rows(tmp_path) == []


def test_clients_keys_replaces_a_partners_keys(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "db", "upgrade")
    first, old = _public_jwks(tmp_path, "first.json")
    client_id = json.loads(
        run(env, "clients", "add", "--agreement", "ons-evaluation", "--jwks", str(first)).output
    )["client_id"]
    new_a, new_b = new_key(), new_key()
    second = tmp_path / "second.json"
    second.write_text(json.dumps(jwks(new_a, new_b)))
    replaced = run(env, "clients", "keys", client_id, "--jwks", str(second))
    assert replaced.exit_code == 0, replaced.output
    assert replaced.output == f"{client_id}: keys {new_a.kid}, {new_b.kid}\n"
    [(_, _, stored, _)] = _client_rows(tmp_path)
    assert stored is not None
    assert {k["kid"] for k in json.loads(stored)["keys"]} == {new_a.kid, new_b.kid}
    assert str(old.as_dict()["x"]) not in stored

    refused = CliRunner().invoke(main, ["clients", "keys", "nobody-123", "--jwks", str(second)], env=env)
    assert refused.exit_code == 1 and "no client 'nobody-123'" in refused.output


def test_clients_add_refuses_an_unknown_agreement(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "db", "upgrade")
    jwks_file, _ = _public_jwks(tmp_path)
    result = CliRunner().invoke(
        main, ["clients", "add", "--agreement", "police-everything", "--jwks", str(jwks_file)], env=env
    )
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
    assert good.output.count("ok ") == len(load_agreements())

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
    assert f"{len(load_agreements())} view snapshots are up to date" in result.output


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


def test_keys_rotate_publishes_a_new_key_that_signs_a_minute_later_and_keeps_the_old_one_for_its_tokens(
    env: dict[str, str],
) -> None:
    run(env, "keys", "generate")
    key_file = Path(env["GATEWAY_SIGNING_KEY_FILE"])
    [old] = json.loads(run(env, "keys", "public").output)["keys"]

    before = datetime.now(UTC)
    rotated = run(env, "keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    data = read_key_file(key_file)
    fresh = data.keys[0]
    starts = data.signs_from[str(fresh.kid)]
    assert before + SIGNS_AFTER <= starts <= datetime.now(UTC) + SIGNS_AFTER
    assert data.retired == {old["kid"]: starts}, "the old key retires when the new one starts signing"
    archive = archive_directory(key_file)
    assert rotated.output.splitlines()[0] == (
        f"{fresh.kid} signs from {starts.isoformat(timespec='seconds')}, when {old['kid']} retires "
        f"(its public half is in {archive})"
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    published = json.loads(run(env, "keys", "public").output)["keys"]
    assert [key["kid"] for key in published] == [fresh.kid, old["kid"]], "both published at once"
    assert json.loads((archive / f"{old['kid']}.json").read_text())["keys"][0]["x"] == old["x"]
    assert "d" not in json.loads((archive / f"{old['kid']}.json").read_text())["keys"][0]

    def at(moment: datetime) -> KeysNow:
        return load_key_file(key_file, now=moment).now()

    # Until it starts, the old key signs and the new one already verifies; then the new one signs.
    assert at(starts - timedelta(seconds=1)).active.kid == old["kid"]
    assert fresh.kid in {key.kid for key in at(starts - timedelta(seconds=1)).verification.keys}
    assert at(starts).active.kid == fresh.kid
    # A token the old key signed still verifies within the retirement window, and not after it.
    soon, later = at(starts + RETIREMENT - timedelta(seconds=1)), at(starts + RETIREMENT)
    assert old["kid"] in {key.kid for key in soon.verification.keys}
    assert old["kid"] not in {key.kid for key in later.verification.keys}
    assert [key["kid"] for key in later.public_jwks["keys"]] == [fresh.kid]
    assert old["kid"] in {key.kid for key in later.audit_verification.keys}, "checkpoints verify for good"

    # The next rotation after the window drops the old key's private half from the file.
    newest, _, dropped = rotate_key_file(key_file, now=starts + RETIREMENT)
    assert dropped == [old["kid"]]
    assert old["kid"] not in key_file.read_text() and str(newest.kid) in key_file.read_text()


def test_two_rotations_within_the_minute_hand_over_in_order(env: dict[str, str]) -> None:
    run(env, "keys", "generate")
    key_file = Path(env["GATEWAY_SIGNING_KEY_FILE"])
    first = load_key_file(key_file).active
    now = datetime.now(UTC)
    second, starts_second, _ = rotate_key_file(key_file, now=now)
    third, starts_third, _ = rotate_key_file(key_file, now=now + timedelta(seconds=10))

    def signer(moment: datetime) -> str | None:
        return load_key_file(key_file, now=moment).active.kid

    assert signer(now + timedelta(seconds=30)) == first.kid
    assert signer(starts_second) == second.kid
    assert signer(starts_third) == third.kid


def test_keys_rotate_says_what_is_wrong_with_a_damaged_key_file(env: dict[str, str]) -> None:
    run(env, "keys", "generate")
    key_file = Path(env["GATEWAY_SIGNING_KEY_FILE"])
    key_file.write_text('{"keys": []}')
    result = CliRunner().invoke(main, ["keys", "rotate"], env=env)
    assert (result.exit_code, result.output) == (1, "error: the key set is empty\n")


def test_keys_rotate_refuses_keys_given_in_the_environment(env: dict[str, str]) -> None:
    keys = json.dumps({"keys": [generate_key().as_dict(private=True)]})
    result = CliRunner().invoke(main, ["keys", "rotate"], env={**env, "GATEWAY_SIGNING_KEYS": keys})
    assert result.exit_code == 1
    assert (
        result.output
        == "error: the keys come from GATEWAY_SIGNING_KEYS: rotate them where that value is kept\n"
    )


def test_policies_check_prints_the_register_with_warnings_ahead_and_refusals(env: dict[str, str]) -> None:
    calm = CliRunner().invoke(main, ["policies", "check", "--today", "2026-11-22"], env=env)
    assert calm.exit_code == 0 and calm.stderr == ""
    police = _register_block(calm.stdout, "police-prevention")
    assert "   partner system: private_key_jwt; DPoP-bound tokens" in police
    assert "   acting user:    verified by " in police
    assert "   state:          in force" in police

    near = CliRunner().invoke(main, ["policies", "check", "--today", "2027-01-05"], env=env)
    assert near.exit_code == 0
    assert (
        "warning: police-prevention@4: falls due for review on 2027-01-31, in 26 days"
        in near.stderr.splitlines()
    )
    assert len(near.stderr.splitlines()) == len(load_agreements())  # all due on 2027-01-31

    lapsed = CliRunner().invoke(main, ["policies", "check", "--today", "2027-04-01", "--json"], env=env)
    assert lapsed.exit_code == 0
    register = {entry["id"]: entry for entry in json.loads(lapsed.stdout)}
    assert set(register) == {
        "police-prevention", "dwp-worklessness", "ons-evaluation", "family-hub-outreach",
        "youth-justice", "mash-safeguarding", "public-health-planning", "school-attendance", "security-audit",
    }  # fmt: skip
    entry = register["police-prevention"]
    assert (entry["in_force"], entry["state"]) == (False, "refused: AGREEMENT_EXPIRED")
    assert (entry["token_binding"], entry["acting_user"], entry["client_authentication"]) == (
        "dpop",
        "verified",
        ["private_key_jwt"],
    )
    assert "warning: police-prevention@4: not in force: AGREEMENT_EXPIRED" in lapsed.stderr


def _register_block(output: str, agreement: str) -> str:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"ok {agreement}@"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("ok ")), len(lines))
    return "\n".join(lines[start:end])


def test_clients_add_reads_the_key_set_from_standard_input(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    key = new_key()
    result = CliRunner().invoke(
        main,
        ["clients", "add", "--agreement", "dwp-worklessness", "--jwks", "-"],
        input=json.dumps(jwks(key)),
        env=env,
    )
    assert result.exit_code == 0, result.output
    [row] = json.loads(run(env, "clients", "list", "--json").output)
    assert (
        row["client_id"] == json.loads(result.output)["client_id"] and row["agreement"] == "dwp-worklessness"
    )


def test_the_reference_partner_client_fails_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "db", "upgrade")
    client_file = tmp_path / "ons.json"
    run(env, "clients", "add", "--agreement", "ons-evaluation", "--client-file", str(client_file))
    cases = [
        (["officer-token", "--client-file", str(client_file), "--officer", "pc-1"], "has no officer issuer"),
        (["token", "--client-file", str(tmp_path / "missing.json")], "cannot read"),
        (["query", "--client-file", str(client_file)], "give the operation once: --query or --query-file"),
        (
            ["query", "--client-file", str(client_file), "--query", "{ x }", "--variables", "[1]"],
            "--variables must be a JSON object",
        ),
    ]
    for arguments, message in cases:
        result = CliRunner().invoke(main, ["partner", *arguments], env=env)
        assert result.exit_code == 1, (arguments, result.output)
        [line] = result.output.splitlines()
        assert line.startswith("error: ") and message in line, (arguments, line)

    # Nothing listens where the client file points (the test settings' issuer, 127.0.0.1:8000, may be
    # in use on a developer's machine): a file naming a closed port.
    written = json.loads(client_file.read_text())
    closed = tmp_path / "closed.json"
    closed.write_text(json.dumps({**written, "issuer": "http://127.0.0.1:9"}))
    result = CliRunner().invoke(main, ["partner", "token", "--client-file", str(closed)], env=env)
    assert result.exit_code == 1
    assert result.output == "error: cannot reach http://127.0.0.1:9/oauth/token (ConnectError)\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["retention", "run", "--batch-size", "0"],
         "error: Invalid value for '--batch-size': 0 is not in the range 1<=x<=5000. "
         "(see gateway retention run --help)"),
        (["retention", "run", "--bogus"],
         "error: No such option '--bogus'. (see gateway retention run --help)"),
        (["rights", "record"], "error: Missing argument 'PERSON_ID'. (see gateway rights record --help)"),
    ],
)  # fmt: skip
def test_a_usage_mistake_is_one_error_line_naming_where_the_usage_is(
    env: dict[str, str], args: list[str], line: str
) -> None:
    result = CliRunner().invoke(main, args, env=env, prog_name="gateway")
    assert (result.exit_code, result.stderr, result.stdout) == (2, line + "\n", "")
