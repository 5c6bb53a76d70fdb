"""The audit ledger: one event per request, the people each response held, evidence of tampering,
and no data when the ledger cannot be written. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from joserfc import jwt
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import EventDraft, LedgerWriter, verify_ledger
from gateway.audit.events import event_hash, event_row
from gateway.audit.tables import audit_checkpoints, audit_disclosures, audit_events
from gateway.cli import main
from gateway.config import Settings
from gateway.keys import SigningKeys, write_key_file
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.identity import new_key
from tests.support.ledger import (
    Fresh,
    allow_ledger_inserts,
    app_on,
    drop_append_only,
    fresh_database,
    refuse_ledger_inserts,
)
from tests.support.partners import PURPOSE, Partner, enrol

PAGE = "query Page($first: Int) { people(first: $first) { edges { node { ref } } } }"


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY) as made:
        yield made


async def _events(engine: AsyncEngine, ids: list[str]) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(audit_events).where(audit_events.c.id.in_(ids)))).all()
        people = (
            await conn.execute(select(audit_disclosures).where(audit_disclosures.c.event_id.in_(ids)))
        ).all()
    events = {row.id: {**row._mapping, "people": set()} for row in rows}
    for row in people:
        events[row.event_id]["people"].add(row.person_id)
    return events


# -- one event per request, holding exactly the people of its response ---------------------------


async def test_concurrent_requests_from_several_partners_produce_exactly_one_event_each(
    http: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, cases: Any, oracle: Any
) -> None:
    partners: dict[str, Partner] = {}
    for agreement_id in ("police-prevention", "ons-evaluation", "dwp-worklessness", "mash-safeguarding"):
        partners[agreement_id] = await enrol(
            engine, http, agreement_id, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
        )
    tokens = {agreement_id: await p.token() for agreement_id, p in partners.items()}
    adult = oracle.people[cases.id("mash_adult")]
    find = (
        "query($g: String!, $f: String!, $d: Date!) "
        "{ findPeople(givenName: $g, familyName: $f, dateOfBirth: $d) { ref members { ref } } }"
    )
    find_vars = {"g": adult.given_name, "f": adult.family_name, "d": adult.date_of_birth.isoformat()}
    requests: list[tuple[str, str, dict[str, Any], bool]] = []
    for i in range(8):
        requests.append(("police-prevention", PAGE, {"first": 3 + i}, True))
        requests.append(("ons-evaluation", PAGE, {"first": 10 + i}, True))
        requests.append(("dwp-worklessness", PAGE, {"first": 1 + i}, True))
    requests += [("mash-safeguarding", find, find_vars, True)] * 4
    requests += [("police-prevention", PAGE, {"first": 5}, False)] * 4  # no purpose headers: refused

    async def send(agreement_id: str, query: str, variables: dict[str, Any], purpose: bool) -> httpx.Response:
        return await partners[agreement_id].post(
            query, variables, purpose=purpose, token=tokens[agreement_id]
        )

    responses = await asyncio.gather(*(send(*request) for request in requests))

    expected: dict[str, set[int]] = {}
    for (agreement_id, *_), response in zip(requests, responses, strict=True):
        event_id = response.headers["x-audit-event-id"]
        refs = [value for value in _strings(response.json().get("data")) if value.startswith("per_")]
        expected[event_id] = {partners[agreement_id].person_id(ref) for ref in refs}
    assert len(expected) == len(requests), "two responses named the same event"
    assert sum(1 for r in responses if r.status_code == 200) == len(requests) - 4

    events = await _events(engine, list(expected))
    assert set(events) == set(expected)
    assert {event_id: e["people"] for event_id, e in events.items()} == expected
    for event_id, event in events.items():
        assert event["people_count"] == len(expected[event_id])
    async with engine.connect() as conn:
        recorded = (
            await conn.execute(
                select(func.count())
                .select_from(audit_events)
                .where(audit_events.c.endpoint == "graphql")
                .where(audit_events.c.client_id.in_([p.client_id for p in partners.values()]))
            )
        ).scalar_one()
    assert recorded == len(requests)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize(
    ("sent", "status", "code"),
    [
        pytest.param({"headers": {}}, 401, "UNAUTHENTICATED", id="no token"),
        pytest.param({"headers": {"Authorization": "Bearer nope"}}, 401, "UNAUTHENTICATED", id="bad token"),
        # A view that runs any document validates it; police runs registered ones only, and a document
        # that does not fit its view cannot be registered.
        pytest.param({"query": "{ people { edges { node { uprn } } } }", "agreement": "family-hub-outreach"},
                     200, "GRAPHQL_VALIDATION_FAILED", id="validation failure"),
        pytest.param({"query": "{ people { edges { node { uprn } } } }"}, 400, "DOCUMENT_NOT_TRUSTED",
                     id="document not trusted"),
        pytest.param({"purpose": False}, 400, "PURPOSE_CONTEXT_REQUIRED", id="missing context"),
    ],
)  # fmt: skip
async def test_refused_requests_are_recorded_too(
    sent: dict[str, Any], status: int, code: str, local_partner: Callable[[str], Partner], engine: AsyncEngine
) -> None:
    client = local_partner(sent.get("agreement", "police-prevention"))
    if "headers" in sent:
        response = await client.http.post(
            "/graphql", json={"query": PAGE}, headers={**PURPOSE, **sent["headers"]}
        )
    else:
        response = await client.post(sent.get("query", PAGE), purpose=sent.get("purpose", True))
    assert response.status_code == status
    assert "data" not in response.json()
    event = (await _events(engine, [response.headers["x-audit-event-id"]]))[
        response.headers["x-audit-event-id"]
    ]
    assert (event["outcome"], event["error_code"], event["http_status"]) == ("denied", code, status)
    assert event["people"] == set() and event["people_count"] == 0
    if code != "UNAUTHENTICATED":
        assert (event["client_id"], event["agreement_id"]) == (client.client_id, client.agreement)


async def test_token_requests_are_recorded_with_the_token_they_issued(
    local_partner: Callable[[str], Partner], engine: AsyncEngine, signing: SigningKeys
) -> None:
    ons = local_partner("ons-evaluation")
    issued = await ons.token_response()
    impostor = Partner(ons.http, ons.agreement, ons.client_id, new_key(), new_key(), ons.refs)  # not its key
    refused = await impostor.token_response()
    events = await _events(engine, [issued.headers["x-audit-event-id"], refused.headers["x-audit-event-id"]])
    ok, bad = events[issued.headers["x-audit-event-id"]], events[refused.headers["x-audit-event-id"]]
    jti = jwt.decode(issued.json()["access_token"], signing.verification, algorithms=["ES256"]).claims["jti"]
    assert (ok["endpoint"], ok["outcome"], ok["client_id"], ok["agreement_id"]) == (
        "token", "allowed", ons.client_id, "ons-evaluation",
    )  # fmt: skip
    assert ok["token_jti"] == jti
    assert (bad["outcome"], bad["error_code"], bad["http_status"], bad["token_jti"]) == (
        "denied", "invalid_client", 401, None,
    )  # fmt: skip


# -- tamper evidence ------------------------------------------------------------------------------


async def _some_history(fresh: Fresh, settings: Settings, signing: SigningKeys) -> list[str]:
    """Eight police requests through an app on the fresh database; the app's close signs the head."""
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, "police-prevention") as (_, police):
        token = await police.token()
        ids = []
        for first in range(1, 9):
            response = await police.post(PAGE, {"first": first}, token=token)
            assert response.status_code == 200
            ids.append(response.headers["x-audit-event-id"])
    return ids


async def test_verify_passes_on_an_untouched_ledger(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    ids = await _some_history(fresh, settings, signing)
    reports = await verify_ledger(fresh.engine, signing.verification)
    assert [r.ok for r in reports] == [True]
    [report] = reports
    assert report.events == 9  # the token request and eight queries
    assert report.checkpoints == 1
    events = await _events(fresh.engine, ids)
    assert [events[i]["seq"] for i in ids] == list(range(2, 10))


def test_events_written_before_the_officer_issuer_column_keep_their_hashes() -> None:
    """Migration 0005 added `officer_issuer`; an event without it hashes as it did before."""
    row = event_row(
        EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=1),
        chain_id="c",
        seq=1,
        prev_hash="0" * 64,
    )
    before = {name: value for name, value in row.items() if name not in ("officer_issuer", "hash")}
    assert event_hash(before, []) == row["hash"]
    assert event_hash({**before, "officer_issuer": "https://idp.example"}, []) != row["hash"]


async def test_the_database_refuses_to_update_or_delete_ledger_rows(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    ids = await _some_history(fresh, settings, signing)
    for statement in (
        update(audit_events).where(audit_events.c.id == ids[0]).values(agreement_id="someone-else"),
        delete(audit_disclosures).where(audit_disclosures.c.event_id == ids[0]),
        delete(audit_checkpoints),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with fresh.engine.begin() as conn:
                await conn.execute(statement)


@pytest.mark.parametrize(
    ("tamper", "named", "problem"),
    [
        pytest.param("update-event", 3, "were altered", id="UPDATE an event"),
        pytest.param("update-issuer", 3, "were altered", id="UPDATE who verified the officer"),
        pytest.param("clear-issuer", 3, "were altered", id="UPDATE a verified officer to asserted"),
        pytest.param("update-disclosure", 4, "were altered", id="UPDATE a disclosure"),
        pytest.param("delete-disclosure", 4, "were altered", id="DELETE a disclosure"),
        pytest.param("delete-event", 6, "missing (deleted)", id="DELETE an event: the next is named"),
        pytest.param("delete-newest", None, "newest events were deleted", id="DELETE the newest event"),
        pytest.param("rehash", 6, "does not follow from the event", id="UPDATE with a recomputed hash"),
        pytest.param("forge-checkpoint", None, "signature does not verify", id="UPDATE a checkpoint"),
    ],
)  # fmt: skip
async def test_verify_names_the_event_after_tampering_made_directly_in_the_database(
    tamper: str, named: int | None, problem: str, fresh: Fresh, settings: Settings, signing: SigningKeys,
    tmp_path: Path,
) -> None:  # fmt: skip
    ids = await _some_history(fresh, settings, signing)
    # ids[k] is the event at seq k + 2 (the token request is seq 1)
    victim = ids[3]  # seq 5
    async with fresh.engine.begin() as conn:
        await drop_append_only(conn)
        if tamper == "update-event":
            await conn.execute(
                update(audit_events).where(audit_events.c.id == ids[1]).values(acting_user="nobody")
            )
        elif tamper in ("update-issuer", "clear-issuer"):
            issuer = "https://idp.elsewhere.example" if tamper == "update-issuer" else None
            await conn.execute(
                update(audit_events).where(audit_events.c.id == ids[1]).values(officer_issuer=issuer)
            )
        elif tamper == "update-disclosure":
            await conn.execute(
                update(audit_disclosures)
                .where(audit_disclosures.c.event_id == ids[2])
                .values(fields="ref,postcode")
            )
        elif tamper == "delete-disclosure":
            first = (
                (
                    await conn.execute(
                        select(audit_disclosures.c.person_id).where(audit_disclosures.c.event_id == ids[2])
                    )
                )
                .scalars()
                .first()
            )
            await conn.execute(
                delete(audit_disclosures).where(
                    audit_disclosures.c.event_id == ids[2], audit_disclosures.c.person_id == first
                )
            )
        elif tamper == "delete-event":
            await conn.execute(delete(audit_disclosures).where(audit_disclosures.c.event_id == victim))
            await conn.execute(delete(audit_events).where(audit_events.c.id == victim))
        elif tamper == "delete-newest":
            await conn.execute(delete(audit_disclosures).where(audit_disclosures.c.event_id == ids[-1]))
            await conn.execute(delete(audit_events).where(audit_events.c.id == ids[-1]))
        elif tamper == "rehash":
            # Change an event and give it a hash that matches its new content: the next link breaks.
            row = dict(
                (await conn.execute(select(audit_events).where(audit_events.c.id == victim))).one()._mapping
            )
            people = (
                await conn.execute(select(audit_disclosures).where(audit_disclosures.c.event_id == victim))
            ).all()
            row["case_reference"] = "CASE-REWRITTEN"
            forged = event_hash(row, [(p.person_id, p.fields) for p in people])
            await conn.execute(
                update(audit_events)
                .where(audit_events.c.id == victim)
                .values(case_reference="CASE-REWRITTEN", hash=forged)
            )
        elif tamper == "forge-checkpoint":
            await conn.execute(update(audit_checkpoints).values(head_hash="f" * 64))

    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert not report.ok
    assert problem in (report.problem or "")
    if named is not None:
        assert report.seq == named
        assert report.event_id == ids[named - 2]

    # The command line says the same and exits 1.
    key_file = tmp_path / "keys.json"
    write_key_file(key_file, [signing.active])
    env = {"GATEWAY_DATABASE_URL": fresh.url, "GATEWAY_SIGNING_KEY_FILE": str(key_file),
           "GATEWAY_REF_SECRET": REF_SECRET.decode(),
           "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness")}  # fmt: skip
    # The command runs its own event loop, so it runs on a thread of its own here.
    result = await asyncio.to_thread(CliRunner().invoke, main, ["audit", "verify"], env=env)
    assert result.exit_code == 1
    assert "FAILED" in result.output and problem in result.output
    if named is not None:
        assert ids[named - 2] in result.output


# -- no audit, no data ----------------------------------------------------------------------------


async def test_with_the_ledger_unwritable_graphql_answers_audit_unavailable_and_no_data(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, "police-prevention") as (_, police):
        token = await police.token()
        query = "{ people(first: 20) { edges { node { ref givenName familyName dateOfBirth postcode } } } }"
        async with fresh.engine.begin() as conn:
            await refuse_ledger_inserts(conn)
        refused = await police.post(query, token=token)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        body = refused.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
        assert "x-audit-event-id" not in refused.headers
        async with fresh.engine.connect() as conn:
            names = {r.family_name for r in await conn.execute(text("SELECT family_name FROM people"))}
        assert not [name for name in names if name in refused.text]

        token_refused = await police.token_response()
        assert token_refused.status_code == 503
        assert token_refused.json()["error"] == "temporarily_unavailable"
        assert "access_token" not in token_refused.json()

        async with fresh.engine.begin() as conn:
            await allow_ledger_inserts(conn)
        served = await police.post(query, token=token)
        assert served.status_code == 200 and len(served.json()["data"]["people"]["edges"]) == 20
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.events == 2  # the first token request and the served query


# -- group commit ---------------------------------------------------------------------------------


async def test_concurrent_events_share_commits_and_form_one_unbroken_chain(
    fresh: Fresh, signing: SigningKeys
) -> None:
    batches: list[int] = []
    writer = LedgerWriter(fresh.engine, signing=signing, on_batch=lambda size, _: batches.append(size))
    drafts = [
        EventDraft(
            endpoint="graphql",
            outcome="allowed",
            http_status=200,
            latency_us=i,
            disclosures=((i + 1, ("ref",)),),
        )
        for i in range(300)
    ]
    await asyncio.gather(*(writer.record(draft) for draft in drafts))
    await writer.close()
    assert sum(batches) == 300
    assert len(batches) < 100, f"{len(batches)} commits for 300 concurrent events"
    async with fresh.engine.connect() as conn:
        seqs = sorted(
            (
                await conn.execute(
                    select(audit_events.c.seq).where(audit_events.c.chain_id == writer.chain_id)
                )
            ).scalars()
        )
        people = (await conn.execute(select(func.count()).select_from(audit_disclosures))).scalar_one()
    assert seqs == list(range(1, 301)) and people == 300
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.checkpoints == 1


async def test_the_writer_reports_failure_and_continues_its_chain_afterwards(
    fresh: Fresh, signing: SigningKeys
) -> None:
    from gateway.audit import AuditUnavailableError

    writer = LedgerWriter(fresh.engine, signing=signing)
    draft = lambda: EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=1)  # noqa: E731
    await writer.record(draft())
    async with fresh.engine.begin() as conn:
        await refuse_ledger_inserts(conn)
    with pytest.raises(AuditUnavailableError):
        await writer.record(draft())
    async with fresh.engine.begin() as conn:
        await allow_ledger_inserts(conn)
    await writer.record(draft())
    await writer.close()
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.events == 2
