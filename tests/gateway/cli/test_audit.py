"""`gateway audit search`, `gateway audit verify` and `gateway sar`, run with click's runner against
the shared session database (SQLite and PostgreSQL), with the ledger the other tests have filled.

The commands call asyncio.run, so they run on a worker thread while the test's loop waits.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import now_text, subject_access_report
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.cli import main
from gateway.keys import (
    RETIREMENT,
    SigningKeys,
    archive_directory,
    generate_key,
    load_key_file,
    read_key_file,
    rotate_key_file,
    write_key_file,
)
from policies import Agreement
from tests.conftest import REF_SECRET
from tests.support.identity import RegisteredClient
from tests.support.partners import Partner
from tests.support.population import EdgeCases

PartnerFactory = Callable[[str], Partner]
POLICE, SECURITY = "police-prevention", "security-audit"
PAGE = "{ people(first: 3) { edges { node { ref familyName } } } }"


@pytest.fixture
def env(database_url: str, signing: SigningKeys, tmp_path: Path) -> dict[str, str]:
    key_file = tmp_path / "signing.jwk.json"
    write_key_file(key_file, [signing.active])
    return {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_SIGNING_KEY_FILE": str(key_file),
        "GATEWAY_REF_SECRET": REF_SECRET.decode(),
        "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness"),
    }


async def invoke(env: dict[str, str], *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env, catch_exceptions=False)


async def _cli_events(engine: AsyncEngine, since: str, **where: Any) -> list[Any]:
    stmt = select(audit_events).where(audit_events.c.endpoint == "cli", audit_events.c.occurred_at >= since)
    for column, value in where.items():
        stmt = stmt.where(audit_events.c[column] == value)
    async with engine.connect() as conn:
        return list((await conn.execute(stmt.order_by(audit_events.c.occurred_at.desc()))).all())


async def test_audit_search_lists_the_police_events_as_json_and_as_text(
    env: dict[str, str], local_partner: PartnerFactory, registered: dict[str, RegisteredClient]
) -> None:
    police = local_partner(POLICE)
    client = registered[POLICE].client_id
    allowed = await police.post(PAGE)
    assert allowed.status_code == 200
    denied = await police.post(PAGE, purpose=False)
    assert denied.status_code == 400
    allowed_id, denied_id = allowed.headers["X-Audit-Event-Id"], denied.headers["X-Audit-Event-Id"]

    result = await invoke(env, "audit", "search", "--client", client, "--json", "--limit", "1000")
    assert result.exit_code == 0, result.output
    events = json.loads(result.output)
    assert {e["client_id"] for e in events} == {client}
    ids = [e["id"] for e in events]
    assert ids.index(denied_id) < ids.index(allowed_id), "newest first"
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times, reverse=True)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t) for t in times)
    event = events[ids.index(allowed_id)]
    assert (event["outcome"], event["agreement_id"], event["agreement_version"]) == ("allowed", POLICE, 4)
    assert (event["people_count"], event["http_status"], event["endpoint"]) == (3, 200, "graphql")
    assert event["fields_disclosed"] == ["ref", "familyName"]
    refused = events[ids.index(denied_id)]
    assert (refused["outcome"], refused["error_code"], refused["people_count"]) == (
        "denied",
        "PURPOSE_CONTEXT_REQUIRED",
        0,
    )

    only_denied = await invoke(env, "audit", "search", "--client", client, "--outcome", "denied", "--json")
    listed = json.loads(only_denied.output)
    assert denied_id in {e["id"] for e in listed} and allowed_id not in {e["id"] for e in listed}
    assert {e["outcome"] for e in listed} == {"denied"}

    text = await invoke(env, "audit", "search", "--client", client, "--limit", "1000")
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert [line.split()[-1] for line in lines] == ids
    [line] = [line for line in lines if line.endswith(allowed_id)]
    assert line.startswith(event["occurred_at"])
    assert re.search(rf"allowed +200 +graphql +{client} +police-prevention@4 +people=3 ", line)


async def test_every_cli_run_is_recorded_under_security_audit(
    env: dict[str, str], engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    before = now_text()
    result = await invoke(env, "audit", "search", "--case-reference", "SEC-9", "--limit", "1")
    assert result.exit_code == 0, result.output
    [event] = await _cli_events(engine, before, case_reference="SEC-9")
    assert (event.operation_name, event.agreement_id, event.agreement_version) == (
        "audit search",
        SECURITY,
        agreements[SECURITY].version,
    )
    assert (event.outcome, event.http_status, event.people_count) == ("allowed", 0, 0)
    assert event.purpose == agreements[SECURITY].purpose
    assert event.client_id == f"cli:{getpass.getuser()}" and event.acting_user == getpass.getuser()

    await invoke(env, "audit", "search", "--acting-user", "analyst-7", "--case-reference", "SEC-10")
    [named] = await _cli_events(engine, before, case_reference="SEC-10")
    assert named.acting_user == "analyst-7"


async def test_sar_prints_the_report_and_records_the_disclosure(
    env: dict[str, str], engine: AsyncEngine, cases: EdgeCases, agreements: dict[str, Agreement]
) -> None:
    person_id = cases.id("cohort_plain")
    before = now_text()
    result = await invoke(env, "sar", str(person_id), "--format", "json", "--case-reference", "SAR-2026-1")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["person_id"] == person_id
    assert (printed["held"]["given_name"], printed["held"]["family_name"]) == ("Ada", "Brackenridge-Vale")

    [event] = await _cli_events(engine, before, case_reference="SAR-2026-1")
    assert (event.operation_name, event.agreement_id, event.people_count) == ("sar", SECURITY, 1)
    assert event.fields_disclosed == "subjectAccessReport"
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(audit_disclosures).where(audit_disclosures.c.event_id == event.id))
        ).all()
    assert [(r.person_id, r.fields) for r in rows] == [(person_id, "subjectAccessReport")]

    # The run is in the ledger, but a report to the person does not list the council's own reads.
    now = await subject_access_report(engine, person_id, agreements=agreements)
    assert now.held == printed["held"]
    assert now.disclosures == printed["disclosures"]
    assert all(d["agreement"] != SECURITY for d in now.disclosures)

    text = await invoke(env, "sar", str(person_id), "--format", "text")
    assert text.exit_code == 0, text.output
    assert text.output.startswith(f"Subject access report for person {person_id}\n")
    assert "  Name:            Ada Brackenridge-Vale\n" in text.output
    assert "Disclosures (" in text.output and "subjectAccessReport" not in text.output


async def test_sar_of_an_unknown_person_fails_and_records_nothing(
    env: dict[str, str], engine: AsyncEngine, cases: EdgeCases
) -> None:
    before = now_text()
    unknown = max(cases.ids.values()) + 1_000
    result = await invoke(env, "sar", str(unknown), "--case-reference", "SAR-UNKNOWN")
    assert result.exit_code == 1
    assert f"no person with id {unknown}" in result.output
    assert "Traceback" not in result.output
    assert await _cli_events(engine, before, case_reference="SAR-UNKNOWN") == []


async def test_audit_verify_passes_on_the_shared_ledger_and_fails_with_a_different_key(
    env: dict[str, str], signing: SigningKeys, tmp_path: Path, local_partner: PartnerFactory
) -> None:
    await local_partner(POLICE).post(PAGE)  # the ledger holds at least one graphql event
    result = await invoke(env, "audit", "verify")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith("ledger intact: ")
    assert lines[:-1] and all(": intact" in line and "FAILED" not in line for line in lines[:-1])

    # The verify run above wrote a signed checkpoint at least, so another key must fail it.
    stranger = tmp_path / "other.jwks.json"
    stranger.write_text(json.dumps({"keys": [generate_key().as_dict(private=False)]}), encoding="utf-8")
    refused = await invoke(env, "audit", "verify", "--jwks", str(stranger))
    assert refused.exit_code == 1
    assert "a checkpoint's signature does not verify" in refused.output
    assert re.search(r"error: \d+ of \d+ chains failed verification", refused.output)
    assert "ledger intact" not in refused.output

    # And the right public keys, given explicitly, verify it.
    right = tmp_path / "right.jwks.json"
    right.write_text(json.dumps({"keys": [signing.active.as_dict(private=False)]}), encoding="utf-8")
    assert (await invoke(env, "audit", "verify", "--jwks", str(right))).exit_code == 0


async def test_audit_verify_checks_checkpoints_of_a_key_retired_long_ago_from_the_archive(
    env: dict[str, str], local_partner: PartnerFactory
) -> None:
    """After a rotation, the old key leaves the JWKS; the checkpoints it signed verify from the
    archive beside the key file, and only from there."""
    await local_partner(POLICE).post(PAGE)  # checkpoints signed by the shared key
    key_file = Path(env["GATEWAY_SIGNING_KEY_FILE"])
    old = read_key_file(key_file).keys[0]
    # Two rotations long ago: the second drops the first key's private half from the file.
    long_ago = datetime.now(UTC) - 2 * RETIREMENT - timedelta(minutes=1)
    rotate_key_file(key_file, now=long_ago, signs_after=timedelta(0))
    _, _, dropped = rotate_key_file(key_file, now=long_ago + RETIREMENT, signs_after=timedelta(0))
    assert dropped == [old.kid]
    assert old.kid not in {key.kid for key in load_key_file(key_file).verification.keys}

    result = await invoke(env, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("ledger intact: ")

    shutil.rmtree(archive_directory(key_file))
    refused = await invoke(env, "audit", "verify")
    assert refused.exit_code == 1
    assert "a checkpoint's signature does not verify" in refused.output
