"""A partner's batch of reports over HTTP with real tokens, on SQLite and PostgreSQL: uploaded as NDJSON or
CSV, worked through as a job whose progress the partner follows, each row's result reported, the whole batch
one audited event naming everyone its reports are about; the job resumes where a stopped process left it,
an upload sent again is the same job, and nothing counts until the batch's event is written.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from gateway import bulk
from gateway import sharing as sharing_module
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys
from resolvers.models import batch_rows, batches, contributions, people, referrals
from tests.support.ledger import allow_ledger_inserts, refuse_ledger_inserts
from tests.support.partners import Partner
from tests.support.sharing import FAMILY, Sharing, open_sharing

CHUNK = 4
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def small_steps(
    database_url: str, tmp_path: Path, settings: Settings, signing: SigningKeys
) -> AsyncIterator[Sharing]:
    """Jobs worked through four rows at a time, a stopped process's job taken up after a second."""
    stepped = settings.model_copy(update={"batch_chunk_rows": CHUNK, "batch_lease_seconds": 1})
    async with open_sharing(database_url, tmp_path, stepped, signing) as made:
        yield made


def _ndjson(rows: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _benefits(dwp: Partner, n: int, *, on: bool = True, person: int = FAMILY) -> dict[str, Any]:
    return {"report": "reportBenefitStatus", "ref": dwp.ref(person), "outOfWorkBenefits": on,
            "asOf": f"2026-09-{n:02d}"}  # fmt: skip


async def _upload(
    partner: Partner, body: bytes, key: str, headers: dict[str, str] = NDJSON
) -> httpx.Response:
    return await partner.send("POST", "/batches", content=body, headers={**headers, "Idempotency-Key": key})


async def _finished(sharing: Sharing, partner: Partner, answered: httpx.Response) -> dict[str, Any]:
    assert answered.status_code in (200, 202), answered.text
    job = answered.json()
    await sharing.app.state.batches.wait(job["id"])
    shown = await partner.send("GET", f"/batches/{job['id']}")
    assert shown.status_code == 200, shown.text
    await sharing.app.state.sharing.settled()  # its referrals are matched in the background, after `done`
    return dict(shown.json())


async def _results(partner: Partner, batch_id: str) -> list[dict[str, Any]]:
    answered = await partner.send("GET", f"/batches/{batch_id}/results")
    assert answered.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in answered.text.splitlines()]


async def _in_view(partner: Partner, person: int) -> bool:
    return any(partner.person_id(node["ref"]) == person for node in await partner.all_people("ref"))


async def test_a_batch_is_worked_through_each_row_reported_and_one_event_names_everyone(
    small_steps: Sharing,
) -> None:
    sharing, dwp, engine = small_steps, small_steps.dwp, small_steps.fresh.engine
    others = [p for p in await _all_refs(dwp) if p != FAMILY][:3]
    rows: list[Any] = [
        _benefits(dwp, 1),
        *({**_benefits(dwp, 2, person=p)} for p in others),
        b"{not json",
        {"report": "reportProvenOffence", "ref": dwp.ref(FAMILY), "date": "2026-09-03"},
        {**_benefits(dwp, 4), "ref": "not-a-ref-of-yours"},
        {**_benefits(dwp, 5), "asOf": "2026-13-01"},
        {"report": "reportBenefitStatus", "ref": dwp.ref(FAMILY), "asOf": "2026-09-06"},
        {**_benefits(dwp, 7), "idempotencyKey": "row-key-0001"},
        {**_benefits(dwp, 7), "idempotencyKey": "row-key-0001"},  # the same again: its first answer
        {**_benefits(dwp, 8), "idempotencyKey": "row-key-0001"},  # another report under that key
        {"report": "reportTwoYearOldOfferEligible", "givenName": "Ada", "familyName": "Batchley",
         "dateOfBirth": "2024-06-15", "addressLine1": "7 Offer Street", "town": "London",
         "postcode": "W2 1AA"},
    ]  # fmt: skip
    body = _ndjson(rows)
    answered = await _upload(dwp, body, "upload-0001")
    assert answered.status_code == 202 and answered.headers["location"] == f"/batches/{answered.json()['id']}"
    assert answered.json()["rows"] == len(rows) == 13
    job = await _finished(sharing, dwp, answered)
    assert {k: job[k] for k in ("state", "rows", "processed", "accepted", "rejected", "percent")} == {
        "state": "done", "rows": 13, "processed": 13, "accepted": 7, "rejected": 6, "percent": 100,
    }  # fmt: skip
    results = await _results(dwp, job["id"])
    assert [(r["row"], r["status"], r.get("code")) for r in results] == [
        *((n, "accepted", None) for n in range(1, 5)),
        (5, "rejected", "BAD_ROW"),
        (6, "rejected", "UNKNOWN_REPORT"),
        (7, "rejected", "BAD_USER_INPUT"),
        (8, "rejected", "BAD_USER_INPUT"),
        (9, "rejected", "BAD_USER_INPUT"),
        (10, "accepted", None),
        (11, "accepted", None),
        (12, "rejected", "IDEMPOTENCY_KEY_REUSED"),
        (13, "accepted", None),
    ]
    by_row = {r["row"]: r for r in results}
    assert by_row[6]["message"] == (
        "report must be one of your agreement's: reportBenefitStatus, reportTwoYearOldOfferEligible."
    )
    assert by_row[7]["message"] == "No person with this ref is in your view."
    assert by_row[8]["message"] == "asOf must be a date, such as 2026-10-01."
    assert by_row[9]["message"] == "outOfWorkBenefits is required."
    assert by_row[11]["id"] == by_row[10]["id"]  # a row repeating a key gets the first answer
    assert all(set(r) <= {"row", "status", "id", "code", "message"} for r in results)  # never whom
    async with engine.connect() as conn:
        [event] = (await conn.execute(select(audit_events).where(audit_events.c.endpoint == "batch"))).all()
        named = await conn.execute(
            select(audit_disclosures.c.person_id).where(audit_disclosures.c.event_id == event.id)
        )
        made = (await conn.execute(select(contributions.c.state, contributions.c.event_id))).all()
        referred = (await conn.execute(select(referrals.c.state, referrals.c.event_id))).all()
        left = (await conn.execute(select(batch_rows.c.body).where(batch_rows.c.body.is_not(None)))).all()
    assert (event.id, event.client_id, event.agreement_id, event.acting_user, event.case_reference) == (
        job["eventId"], dwp.client_id, "dwp-worklessness", "officer-1234", "CASE-2026-0042",
    )  # fmt: skip
    assert event.document_sha256 == hashlib.sha256(body).hexdigest()
    assert event.operation_name == f"batch {job['id']}: 7 of 13 rows accepted"
    assert sorted(named.scalars()) == sorted([FAMILY, *others])
    assert sorted(made) == [("recorded", event.id)] * 5
    assert referred == [("opened", event.id)]
    assert left == []  # what a row said is dropped once its result is recorded
    # The reports count: with out-of-work benefits the family meets a third outcome, and the police see it.
    assert await _in_view(sharing.police, FAMILY)


async def _all_refs(partner: Partner) -> list[int]:
    return [partner.person_id(node["ref"]) for node in await partner.all_people("ref")]


async def test_a_csv_batch_is_the_same_as_ndjson(sharing: Sharing) -> None:
    dwp = sharing.dwp
    csv = (
        "report,ref,outOfWorkBenefits,asOf,idempotencyKey\r\n"
        f"reportBenefitStatus,{dwp.ref(FAMILY)},true,2026-09-01,csv-row-0001\r\n"
        "\r\n"
        f"reportBenefitStatus,{dwp.ref(FAMILY)},maybe,2026-09-02,\r\n"
        "reportBenefitStatus,only-three,cells\r\n"
    ).encode()
    job = await _finished(
        sharing, dwp, await _upload(dwp, csv, "csv-upload-01", {"Content-Type": "text/csv"})
    )
    assert (job["rows"], job["accepted"], job["rejected"]) == (3, 1, 2)
    assert [(r["row"], r["status"], r.get("message")) for r in await _results(dwp, job["id"])] == [
        (1, "accepted", None),
        (2, "rejected", "outOfWorkBenefits must be true or false."),
        (3, "rejected", "The row is not a JSON object, or has the wrong number of cells."),
    ]
    assert await _in_view(sharing.police, FAMILY)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"", NDJSON, 400, "BAD_BATCH"),
        (b"\xff\xfe", NDJSON, 400, "BAD_BATCH"),
        (b"report,surname\r\nreportBenefitStatus,Smith\r\n", {"Content-Type": "text/csv"}, 400, "BAD_BATCH"),
        (b'report,ref\r\n"open quote\r\n', {"Content-Type": "text/csv"}, 400, "BAD_BATCH"),
        (b"{}\n", {"Content-Type": "application/json"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"{}\n" * 7, NDJSON, 413, "BATCH_TOO_LARGE"),
        ('{"report": "reportBenefitStatus"}\n'.encode("utf-16-le"), NDJSON, 400, "BAD_BATCH"),
    ],
)
async def test_a_bad_upload_is_refused_whole_with_its_code_and_makes_no_job(
    database_url: str, tmp_path: Path, settings: Settings, signing: SigningKeys,
    body: bytes, headers: dict[str, str], status: int, code: str,
) -> None:  # fmt: skip
    limited = settings.model_copy(update={"max_batch_rows": 6})
    async with open_sharing(database_url, tmp_path, limited, signing) as sharing:
        answered = await _upload(sharing.dwp, body, "bad-upload-01", headers)
        assert (answered.status_code, answered.json()["errors"][0]["extensions"]["code"]) == (status, code)
        assert "Smith" not in answered.text
        async with sharing.fresh.engine.connect() as conn:
            assert (await conn.execute(select(batches))).all() == []
            events = await conn.execute(
                select(audit_events.c.http_status, audit_events.c.error_code).where(
                    audit_events.c.endpoint == "batches"
                )
            )
            assert events.all() == [(status, code)]


async def test_an_upload_sent_again_is_the_same_job_and_its_key_names_one_batch(sharing: Sharing) -> None:
    dwp = sharing.dwp
    body = _ndjson([_benefits(dwp, 1)])
    first = await _upload(dwp, body, "again-upload-1")
    again = await _upload(dwp, body, "again-upload-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    other = await _upload(dwp, _ndjson([_benefits(dwp, 2)]), "again-upload-1")
    assert (other.status_code, other.json()["errors"][0]["extensions"]["code"]) == (
        409,
        "IDEMPOTENCY_KEY_REUSED",
    )
    keyless = await dwp.send("POST", "/batches", content=body, headers=NDJSON)
    assert (keyless.status_code, keyless.json()["errors"][0]["extensions"]["code"]) == (400, "BAD_REQUEST")
    await sharing.app.state.batches.wait(first.json()["id"])
    # A job is its uploader's alone: the police are told it does not exist, as for no job at all.
    for path in (f"/batches/{first.json()['id']}", f"/batches/{first.json()['id']}/results", "/batches/x"):
        refused = await sharing.police.send("GET", path)
        assert (refused.status_code, refused.json()["errors"][0]["extensions"]["code"]) == (404, "NOT_FOUND")
    wrong = await dwp.send("PUT", "/batches", content=body, headers=NDJSON)
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    async with sharing.fresh.engine.connect() as conn:
        kinds = await conn.execute(
            select(audit_events.c.operation_name, audit_events.c.http_status)
            .where(audit_events.c.endpoint == "batches")
            .order_by(audit_events.c.occurred_at)
        )
        assert [tuple(k) for k in kinds][:3] == [
            ("upload batch", 202),
            ("upload batch", 200),
            ("upload batch", 409),
        ]


async def test_a_job_stopped_part_way_is_taken_up_once_its_lease_runs_out_and_no_row_is_done_twice(
    small_steps: Sharing,
) -> None:
    sharing, dwp, engine = small_steps, small_steps.dwp, small_steps.fresh.engine
    runner = sharing.app.state.batches
    chunks = 0
    paused = asyncio.Event()
    never = asyncio.Event()

    async def stop_after_two(batch_id: str) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 2:
            paused.set()
            await never.wait()  # the process stops here: cancelled below, as a shutdown would

    runner.on_chunk = stop_after_two
    refs = await _all_refs(dwp)
    rows = [_benefits(dwp, 1 + n % 28, person=refs[n % len(refs)]) | {"idempotencyKey": f"resume-{n:04d}"}
            for n in range(18)]  # fmt: skip
    answered = await _upload(dwp, _ndjson(rows), "resume-upload-1")
    batch_id = answered.json()["id"]
    await asyncio.wait_for(paused.wait(), 10)
    await runner.close()
    runner.on_chunk = None
    # As if its process had died holding the lease: nobody takes the job up until the lease runs out.
    async with engine.begin() as conn:
        await conn.execute(
            update(batches).where(batches.c.id == batch_id)
            .values(lease_until=datetime.now(UTC) + timedelta(seconds=60))
        )  # fmt: skip
    held = (await dwp.send("GET", f"/batches/{batch_id}")).json()
    assert (held["state"], held["processed"], held["percent"]) == ("running", 2 * CHUNK, 44)
    runner.start(batch_id)  # another process trying: the lease in the database stops it
    await runner.wait(batch_id)
    assert (await dwp.send("GET", f"/batches/{batch_id}")).json()["processed"] == 2 * CHUNK
    async with engine.begin() as conn:
        await conn.execute(
            update(batches)
            .where(batches.c.id == batch_id)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    resumed = await dwp.send("GET", f"/batches/{batch_id}")  # asking for progress takes it up
    assert resumed.status_code == 200
    await runner.wait(batch_id)
    job = (await dwp.send("GET", f"/batches/{batch_id}")).json()
    assert (job["state"], job["processed"], job["accepted"], job["rejected"]) == ("done", 18, 18, 0)
    assert [r["row"] for r in await _results(dwp, batch_id)] == list(range(1, 19))
    async with engine.connect() as conn:
        made = (await conn.execute(select(contributions.c.idempotency_key, contributions.c.state))).all()
    assert sorted(made) == [(f"resume-{n:04d}", "recorded") for n in range(18)]


async def test_nothing_counts_until_the_batchs_event_is_written(sharing: Sharing) -> None:
    dwp, engine, runner = sharing.dwp, sharing.fresh.engine, sharing.app.state.batches
    token = await dwp.token()
    answered = await _upload(dwp, _ndjson([_benefits(dwp, 1)]), "sealing-upload-1")
    batch_id = answered.json()["id"]
    async with engine.begin() as conn:
        await refuse_ledger_inserts(conn)
    try:
        await runner.wait(batch_id)
        async with engine.connect() as conn:
            state = (await conn.execute(select(batches.c.state).where(batches.c.id == batch_id))).scalar_one()
            pending = (await conn.execute(select(contributions.c.state))).scalars().all()
    finally:
        async with engine.begin() as conn:
            await allow_ledger_inserts(conn)
    assert (state, pending) == ("sealing", ["pending"])
    job = await _finished(sharing, dwp, await dwp.send("GET", f"/batches/{batch_id}", token=token))
    assert job["state"] == "done"
    async with engine.connect() as conn:
        assert (await conn.execute(select(contributions.c.state))).scalars().all() == ["recorded"]
    assert await _in_view(sharing.police, FAMILY)


async def test_a_batch_made_while_the_client_is_disabled_stops_and_its_rows_say_why(sharing: Sharing) -> None:
    from gateway.oauth.clients import clients

    dwp, engine, runner = sharing.dwp, sharing.fresh.engine, sharing.app.state.batches
    runner.on_chunk = None
    async with engine.begin() as conn:
        before = (await conn.execute(select(people.c.id))).scalars().all()
    answered = await _upload(dwp, _ndjson([_benefits(dwp, 1)]), "disabled-upload-1")
    # Disabled between the upload and its job: the job stops, every row rejected with the reason.
    async with engine.begin() as conn:
        await conn.execute(
            update(clients).where(clients.c.client_id == dwp.client_id).values(disabled_at=datetime.now(UTC))
        )
    await runner.close()
    async with engine.begin() as conn:
        await conn.execute(update(batches).values(lease_until=None, processed=0, accepted=0, rejected=0))
        await conn.execute(
            update(batch_rows).values(status=None, code=None, message=None, result_id=None, person_id=None)
        )
    await runner.resume()
    await runner.wait(answered.json()["id"])
    async with engine.connect() as conn:
        job = (await conn.execute(select(batches))).one()
        rows = (await conn.execute(select(batch_rows.c.status, batch_rows.c.code))).all()
        assert (await conn.execute(select(people.c.id))).scalars().all() == before
    assert (job.state, job.stop_code, job.rejected) == ("stopped", "CLIENT_DISABLED", 1)
    assert rows == [("rejected", "CLIENT_DISABLED")]


async def test_an_upload_whose_event_cannot_be_written_starts_no_work_until_it_is_sent_again(
    sharing: Sharing,
) -> None:
    dwp, engine, runner = sharing.dwp, sharing.fresh.engine, sharing.app.state.batches
    token = await dwp.token()
    body = _ndjson([_benefits(dwp, 1)])
    async with engine.begin() as conn:
        await refuse_ledger_inserts(conn)
    try:
        refused = await dwp.send(
            "POST",
            "/batches",
            content=body,
            headers={**NDJSON, "Idempotency-Key": "unsealed-01"},
            token=token,
        )
        assert refused.status_code == 503
        async with engine.connect() as conn:
            [(batch_id, processed)] = (await conn.execute(select(batches.c.id, batches.c.processed))).all()
        await runner.wait(batch_id)
    finally:
        async with engine.begin() as conn:
            await allow_ledger_inserts(conn)
    # Not even the next start-up takes it up: the partner was told it failed.
    assert await runner.resume() == 0
    await runner.wait(batch_id)
    async with engine.connect() as conn:
        assert (await conn.execute(select(batches.c.processed, batches.c.state))).one() == (
            processed,
            "received",
        )
        assert processed == 0 and (await conn.execute(select(contributions))).all() == []
    job = await _finished(sharing, dwp, await _upload(dwp, body, "unsealed-01"))
    assert (job["id"], job["state"], job["accepted"]) == (batch_id, "done", 1)


async def test_a_row_no_check_foresaw_is_refused_alone_and_a_line_is_split_only_at_line_feeds(
    sharing: Sharing,
) -> None:
    dwp = sharing.dwp
    rows: list[Any] = [
        b"[" * 100_000,  # nested past the parser's depth
        {**_benefits(dwp, 1), "outOfWorkBenefits": 10**400},
        {**_benefits(dwp, 2), "idempotencyKey": "line\u2028separated"},  # one row, though Python splits there
        _benefits(dwp, 3),
    ]
    job = await _finished(sharing, dwp, await _upload(dwp, _ndjson(rows), "odd-rows-0001"))
    assert (job["state"], job["rows"], job["accepted"], job["rejected"]) == ("done", 4, 1, 3)
    assert [(r["row"], r["status"], r.get("code")) for r in await _results(dwp, job["id"])] == [
        (1, "rejected", "BAD_ROW"), (2, "rejected", "BAD_USER_INPUT"), (3, "rejected", "BAD_USER_INPUT"),
        (4, "accepted", None),
    ]  # fmt: skip


async def test_a_chunk_that_fails_part_way_leaves_nothing_of_itself(
    small_steps: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its reports and its results are one transaction (on SQLite too): a chunk that fails on its third row
    has recorded neither the first two rows' reports nor their results, and is done again later."""
    sharing, dwp, engine = small_steps, small_steps.dwp, small_steps.fresh.engine
    calls = 0
    real = bulk.submit_row

    async def third_fails(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the database went away mid-chunk")
        return await real(*args, **kwargs)

    monkeypatch.setattr(bulk, "submit_row", third_fails)
    refs = await _all_refs(dwp)
    rows = [_benefits(dwp, 1 + n, person=refs[n]) for n in range(CHUNK)]
    answered = await _upload(dwp, _ndjson(rows), "failing-chunk-1")
    await sharing.app.state.batches.wait(answered.json()["id"])
    async with engine.connect() as conn:
        assert (await conn.execute(select(contributions))).all() == []
        assert (await conn.execute(select(batch_rows.c.status))).scalars().all() == [None] * CHUNK
        job = (await conn.execute(select(batches.c.processed, batches.c.lease_until))).one()
    assert job.processed == 0 and job.lease_until is not None  # kept until its lease runs out, then again
    monkeypatch.setattr(bulk, "submit_row", real)
    async with engine.begin() as conn:
        await conn.execute(update(batches).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    done = await _finished(sharing, dwp, await dwp.send("GET", f"/batches/{answered.json()['id']}"))
    assert (done["state"], done["accepted"]) == ("done", CHUNK)


async def test_two_processes_on_one_job_do_each_row_once_and_count_it_once(
    small_steps: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process slower than its lease: another takes the job up meanwhile. Each row's result is recorded
    once, the counts add up, and the slow one stops when it sees the job is no longer its own."""
    sharing, dwp, engine = small_steps, small_steps.dwp, small_steps.fresh.engine
    runner = sharing.app.state.batches
    real = bulk.submit_row

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.35)  # four rows: longer than the one-second lease
        return await real(*args, **kwargs)

    monkeypatch.setattr(bulk, "submit_row", slow)
    refs = await _all_refs(dwp)
    rows = [_benefits(dwp, 1 + n, person=refs[n]) for n in range(2 * CHUNK)]
    answered = await _upload(dwp, _ndjson(rows), "two-runners-01")
    batch_id = answered.json()["id"]
    other = copy.copy(runner)
    other._tasks, other._me = {}, "another-process"
    await asyncio.sleep(1.1)
    taken = await other.resume()
    if sharing.fresh.url.startswith("postgresql"):
        assert taken == 1  # on SQLite the first process's chunk holds the writer and renews its lease first
    await asyncio.gather(runner.wait(batch_id), other.wait(batch_id))
    for _ in range(20):  # whichever finishes, the job is done
        job = (await dwp.send("GET", f"/batches/{batch_id}")).json()
        if job["state"] == "done":
            break
        await asyncio.gather(runner.wait(batch_id), other.wait(batch_id))
    assert {k: job[k] for k in ("state", "processed", "accepted", "percent")} == {
        "state": "done", "processed": 2 * CHUNK, "accepted": 2 * CHUNK, "percent": 100,
    }  # fmt: skip
    assert [r["row"] for r in await _results(dwp, batch_id)] == list(range(1, 2 * CHUNK + 1))
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(contributions))).scalar_one() == 2 * CHUNK


async def test_a_batchs_referrals_are_matched_a_group_at_a_time_every_one_of_them(
    sharing: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matched in short transactions (on SQLite the one writer's lock is held for a group, not a batch)."""
    monkeypatch.setattr(sharing_module, "MATCH_GROUP", 2)
    dwp, engine = sharing.dwp, sharing.fresh.engine
    rows = [
        {"report": "reportTwoYearOldOfferEligible", "givenName": name, "familyName": "Grouped",
         "dateOfBirth": f"2024-0{n + 1}-15", "addressLine1": f"{n} Group Road", "town": "London",
         "postcode": f"W{n + 2} 1AA"}
        for n, name in enumerate(("Ada", "Bea", "Cas", "Dee", "Eve"))
    ]  # fmt: skip
    job = await _finished(sharing, dwp, await _upload(dwp, _ndjson(rows), "grouped-0001"))
    assert (job["state"], job["accepted"]) == ("done", 5)
    async with engine.connect() as conn:
        states = (await conn.execute(select(referrals.c.state))).scalars().all()
    assert states == ["opened"] * 5


async def test_an_upload_recorded_by_a_process_that_stopped_before_starting_its_job_runs_at_start_up(
    sharing: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    dwp, runner = sharing.dwp, sharing.app.state.batches

    async def stopped(self: Any, outcome: Any) -> None:
        return None  # the process stops between writing the upload's event and starting its job

    with monkeypatch.context() as patched:
        patched.setattr(type(sharing.app.state.batches_endpoint), "recorded", stopped)
        answered = await _upload(dwp, _ndjson([_benefits(dwp, 1)]), "stopped-upload-1")
    assert answered.status_code == 202
    assert (await dwp.send("GET", f"/batches/{answered.json()['id']}")).json()["state"] == "received"
    assert await runner.resume() == 1  # its event is in the ledger: the next start-up starts it
    job = await _finished(sharing, dwp, await dwp.send("GET", f"/batches/{answered.json()['id']}"))
    assert (job["state"], job["accepted"]) == ("done", 1)


async def test_a_stopped_job_stays_stopped_and_a_chunk_that_keeps_failing_ends_its_job(
    small_steps: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.oauth.clients import clients

    sharing, dwp, engine, runner = (
        small_steps,
        small_steps.dwp,
        small_steps.fresh.engine,
        small_steps.app.state.batches,
    )
    refs = await _all_refs(dwp)
    chunks = 0

    async def disable_then_enable(batch_id: str) -> None:
        nonlocal chunks
        chunks += 1
        disabled = datetime.now(UTC) if chunks == 1 else None  # disabled after the first chunk, then back
        async with engine.begin() as conn:
            await conn.execute(
                update(clients).where(clients.c.client_id == dwp.client_id).values(disabled_at=disabled)
            )

    runner.on_chunk = disable_then_enable
    rows = [_benefits(dwp, 1 + n, person=refs[n]) for n in range(3 * CHUNK)]
    job = await _finished(sharing, dwp, await _upload(dwp, _ndjson(rows), "sticky-stop-01"))
    runner.on_chunk = None
    codes = [r.get("code") for r in await _results(dwp, job["id"])]
    assert (job["state"], job["stopCode"]) == ("stopped", "CLIENT_DISABLED")
    assert codes == [None] * CHUNK + ["CLIENT_DISABLED"] * 2 * CHUNK  # re-enabled: still stopped

    async def always_fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fault no row check foresaw")

    monkeypatch.setattr(bulk, "submit_row", always_fails)
    answered = await _upload(dwp, _ndjson(rows[:2]), "poison-chunk-01")
    batch_id = answered.json()["id"]
    for _ in range(bulk.MAX_FAILURES):
        await runner.wait(batch_id)
        async with engine.begin() as conn:  # each failure waits out its lease
            await conn.execute(update(batches).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
        runner.start(batch_id)
    job = await _finished(sharing, dwp, await dwp.send("GET", f"/batches/{batch_id}"))
    assert (job["state"], job["stopCode"], job["rejected"]) == ("stopped", "BATCH_FAILED", 2)
    assert [r["message"] for r in await _results(dwp, batch_id)] == [
        "The batch could not be completed: this row was not done."
    ] * 2


async def test_nothing_a_row_holds_reaches_the_logs_even_when_a_chunk_fails(
    small_steps: Sharing, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A referral's name and postcode, a report's ref: not in any log line, not even in the record of a chunk
    that failed on an error whose message quotes them (as a driver's or a library's may)."""
    sharing, dwp, runner = small_steps, small_steps.dwp, small_steps.app.state.batches
    caplog.set_level(logging.DEBUG)
    ref = dwp.ref(FAMILY)
    rows = [
        _benefits(dwp, 1),
        {"report": "reportTwoYearOldOfferEligible", "givenName": "Quentinella", "familyName": "Logsworth",
         "dateOfBirth": "2024-06-15", "addressLine1": "7 Quiet Street", "town": "London",
         "postcode": "SW9 9ZZ"},
        {**_benefits(dwp, 2), "outOfWorkBenefits": 10**400},
    ]  # fmt: skip
    job = await _finished(sharing, dwp, await _upload(dwp, _ndjson(rows), "no-logs-0001"))
    assert (job["accepted"], job["rejected"]) == (2, 1)

    quoted = " ".join(str(value) for value in (*rows[1].values(), ref))  # (frames show this line, not them)

    async def quoting(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(quoted)

    monkeypatch.setattr(bulk, "submit_row", quoting)
    answered = await _upload(dwp, _ndjson(rows[1:2]), "no-logs-0002")
    await runner.wait(answered.json()["id"])
    logged = "\n".join(
        record.getMessage() + " " + str(record.__dict__)
        for record in caplog.records
        if record.name.startswith("gateway")
    )
    assert "batch stopped; it will be taken up again" in logged  # the failure was logged, by type
    for value in ("Quentinella", "Logsworth", "SW9 9ZZ", "2024-06-15", "7 Quiet Street", ref):
        assert value not in logged, value
