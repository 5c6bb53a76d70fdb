"""`gateway rights`: requests recorded from the command line take effect on partners' very next
request over HTTP, on SQLite and PostgreSQL, and every change is in the ledger first."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import render_text, subject_access_report
from gateway.audit.tables import audit_events
from gateway.rights import rights_requests
from policies import Agreement
from resolvers.models import objections, restrictions
from tests.conftest import FIXED_TODAY
from tests.gateway.cli.conftest import run_gateway
from tests.support.oracle import Oracle
from tests.support.partners import Partner

PERSON = "query Person($r: ID!) { person(ref: $r) { ref } }"
OPERATOR = "dpo.officer@council.test.invalid"


@pytest.fixture(scope="module")
def cli(session_cli_env: tuple[dict[str, str], Path]) -> Callable[..., subprocess.CompletedProcess[str]]:
    env, cwd = session_cli_env
    return lambda *args: run_gateway(env, cwd, "rights", *args, "--acting-user", OPERATOR)


@pytest.fixture
async def tidy(engine: AsyncEngine) -> AsyncIterator[list[int]]:
    """Whatever a test put in effect is gone afterwards: the session's population is shared."""
    people: list[int] = []
    yield people
    async with engine.begin() as conn:
        for table in (restrictions, objections, rights_requests):
            await conn.execute(delete(table).where(table.c.person_id.in_(people)))


def _one(oracle: Oracle, agreements: dict[str, Agreement], *reached_by: str) -> int:
    """A person every one of these agreements reaches today, with no objection recorded."""
    sets = [oracle.expected(agreements[a], FIXED_TODAY) for a in reached_by]
    common = set.intersection(*sets)
    assert common, reached_by
    return min(common)


async def _sees(partner: Partner, person_id: int) -> bool:
    data = await partner.data(PERSON, {"r": partner.ref(person_id)})
    return data["person"] is not None


def _request_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]


async def test_a_restriction_hides_the_person_on_the_very_next_request_until_it_is_lifted(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    local_partner: Callable[[str], Partner],
    oracle: Oracle,
    agreements: dict[str, Agreement],
    tidy: list[int],
) -> None:
    police = local_partner("police-prevention")
    person = _one(oracle, agreements, "police-prevention")
    tidy.append(person)
    assert await _sees(police, person)
    recorded = cli(
        "record", str(person), "--kind", "restriction", "--agreement", "*", "--basis", "UK GDPR Art 18(1)(a)"
    )
    request = _request_id(recorded)
    assert "restriction *  in effect" in recorded.stdout
    assert not await _sees(police, person)
    lifted = cli("lift", request, "--note", "accuracy confirmed")
    assert lifted.returncode == 0 and "lifted" in lifted.stdout
    assert await _sees(police, person)


async def test_a_restriction_of_one_agreement_leaves_the_others_alone(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    local_partner: Callable[[str], Partner],
    oracle: Oracle,
    agreements: dict[str, Agreement],
    tidy: list[int],
) -> None:
    police, ons = local_partner("police-prevention"), local_partner("ons-evaluation")
    person = _one(oracle, agreements, "police-prevention", "ons-evaluation")
    tidy.append(person)
    request = _request_id(
        cli(
            "record",
            str(person),
            "--kind",
            "restriction",
            "--agreement",
            "ons-evaluation",
            "--basis",
            "Art 18",
        )
    )
    assert not await _sees(ons, person)
    assert await _sees(police, person)
    assert cli("lift", request, "--note", "done").returncode == 0
    assert await _sees(ons, person)


async def test_an_objection_changes_only_the_views_that_honour_it(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    local_partner: Callable[[str], Partner],
    oracle: Oracle,
    agreements: dict[str, Agreement],
    tidy: list[int],
) -> None:
    hub, police = local_partner("family-hub-outreach"), local_partner("police-prevention")
    person = _one(oracle, agreements, "family-hub-outreach", "police-prevention")
    tidy.append(person)
    recorded = cli(
        "record", str(person), "--kind", "objection", "--agreement", "*", "--basis", "UK GDPR Art 21(1)"
    )
    request = _request_id(recorded)
    assert "not honoured by" in recorded.stdout and "police-prevention" in recorded.stdout
    assert "family-hub-outreach" not in recorded.stdout.split("not honoured by", 1)[1]
    assert not await _sees(hub, person)  # consent-based: honoured
    assert await _sees(police, person)  # a legal gateway: recorded, no effect
    assert cli("lift", request, "--note", "withdrawn").returncode == 0
    assert await _sees(hub, person)


async def test_every_change_is_in_the_ledger_and_the_register_keeps_the_whole_story(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    oracle: Oracle,
    agreements: dict[str, Agreement],
    engine: AsyncEngine,
    tidy: list[int],
) -> None:
    person = _one(oracle, agreements, "ons-evaluation")
    tidy.append(person)
    access = _request_id(
        cli(
            "record",
            str(person),
            "--kind",
            "access",
            "--basis",
            "UK GDPR Art 15",
            "--by",
            "representative",
            "--received",
            "2026-11-20",
        )
    )
    closed = cli("close", access, "--outcome", "completed", "--note", "pack sent by post")
    assert closed.returncode == 0 and "completed" in closed.stdout
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                select(
                    audit_events.c.operation_name, audit_events.c.acting_user, audit_events.c.agreement_id
                ).where(
                    audit_events.c.operation_name.in_(
                        (f"rights record access {access}", f"rights close completed {access}")
                    )
                )
            )
        ).all()
    assert sorted(e.operation_name for e in events) == [
        f"rights close completed {access}",
        f"rights record access {access}",
    ]
    assert {(e.acting_user, e.agreement_id) for e in events} == {(OPERATOR, "security-audit")}
    listed = json.loads(cli("list", "--person", str(person), "--json").stdout)
    keys = ("id", "kind", "status", "requested_by", "received_on", "recorded_by", "closed_by", "outcome_note")
    assert [tuple(r[key] for key in keys) for r in listed] == [
        (
            access,
            "access",
            "completed",
            "representative",
            "2026-11-20",
            OPERATOR,
            OPERATOR,
            "pack sent by post",
        ),
    ]
    # The person's own subject access report lists the request and what came of it (not who handled it).
    report = await subject_access_report(engine, person, agreements=agreements)
    closed_on = report.requests[0]["closed_on"]
    assert date.fromisoformat(closed_on) >= date(2026, 11, 20)
    assert report.requests == [
        {
            "kind": "access",
            "about": None,
            "received_on": "2026-11-20",
            "status": "completed",
            "outcome_note": "pack sent by post",
            "closed_on": closed_on,
        }
    ]
    assert OPERATOR not in json.dumps(report.as_json())
    assert "access  completed" in render_text(report)  # the plain report too
    # A close refused for its note writes no event: the check comes before the ledger.
    second = _request_id(cli("record", str(person), "--kind", "access", "--basis", "UK GDPR Art 15"))
    before = await _counts(engine)
    refused = cli("close", second, "--outcome", "completed", "--note", "bad\x07note")
    assert refused.returncode == 1 and "(BAD_INPUT)" in refused.stderr
    assert await _counts(engine) == before
    again = cli("close", access, "--outcome", "refused", "--note", "x")
    assert (
        again.returncode == 1
        and again.stderr.strip() == "error: this request is completed already (NOT_OPEN)"
    )


RECORD = ["record", "PERSON", "--kind"]
REFUSALS = [
    (
        ["record", "2147483000", "--kind", "access", "--basis", "Art 15"],
        "no person has the id 2147483000 (UNKNOWN_PERSON)",
    ),
    (
        [*RECORD, "restriction", "--basis", "Art 18"],
        "a restriction names one agreement, or '*' for every one (BAD_INPUT)",
    ),
    (
        [*RECORD, "objection", "--agreement", "security-audit", "--basis", "Art 21"],
        "no agreement over person records has the id 'security-audit' (UNKNOWN_AGREEMENT)",
    ),
    (
        [*RECORD, "access", "--basis", "Art 15", "--received", "2999-01-01"],
        "a request cannot be received after today (BAD_INPUT)",
    ),
    (
        [*RECORD, "access", "--basis", "bad\u202ebasis"],
        "the legal basis must be plain text of 1 to 200 characters (BAD_INPUT)",
    ),
    (["lift", "0" * 32, "--note", "x"], "no request has this id (UNKNOWN_REQUEST)"),
    (["lift", "not-an-id", "--note", "x"], "no request has this id (UNKNOWN_REQUEST)"),
]


async def test_a_refused_request_is_one_line_with_its_code_and_writes_nothing(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    oracle: Oracle,
    agreements: dict[str, Agreement],
    engine: AsyncEngine,
) -> None:
    person = str(_one(oracle, agreements, "ons-evaluation"))
    for args, line in REFUSALS:
        before = await _counts(engine)
        result = cli(*[person if arg == "PERSON" else arg for arg in args])
        assert (result.returncode, result.stderr.strip()) == (1, f"error: {line}"), args
        assert await _counts(engine) == before, args  # no request, and no event of ours


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    """Requests in the register, and ledger events written by this module's operator."""
    async with engine.connect() as conn:
        requests = (await conn.execute(select(func.count()).select_from(rights_requests))).scalar_one()
        events = (
            await conn.execute(
                select(func.count()).select_from(audit_events).where(audit_events.c.acting_user == OPERATOR)
            )
        ).scalar_one()
    return int(requests), int(events)
