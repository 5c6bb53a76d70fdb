"""Partners' batches of reports: a job per upload, its rows worked through in chunks, one audit event.

An upload (gateway.batches) is parsed here into rows and kept (`batches`, `batch_rows`) before it is
answered; a `BatchRunner` then works through the rows a chunk at a time, each row exactly as its mutation
would be (schema.contributions.submit_row), recording each row's result and the job's progress with it.
Every report waits, pending, under the batch's one audit event (its id known ahead). When the last row is
done the event is written (endpoint `batch`: the client, agreement, officer and case of the upload, the
upload's SHA-256, and every person a report is about), and only then do the reports count and the
referrals get matched, as for a request. If the ledger cannot be written the job waits in `sealing`.

Resumable: a process works on a job under a lease it renews after every chunk. A job whose process
stopped (a crash, a deploy) is taken up again, by any process, at start-up or when its progress is asked
for after the lease ran out; rows already done are not done again, and a row done but not yet recorded
is done again under the same idempotency key, which gives the first answer.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import bindparam, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit import AuditUnavailableError, EventDraft, LedgerWriter
from gateway.audit.tables import audit_events
from gateway.db import is_unavailable, utc
from gateway.http import InvalidJsonError, parse_json
from gateway.oauth.clients import clients
from gateway.sharing import ContributionStore
from gateway.telemetry import trace_id_hex
from policies import Agreement, PurposeContext, evaluate
from resolvers import RefCodec
from resolvers.models import DONE, RECEIVED, RUNNING, SEALING, STOPPED, batch_rows, batches
from schema import ViewContext
from schema.contributions import FIELD, ROW_COLUMNS, submit_row
from schema.errors import ViewError

log = logging.getLogger("gateway.bulk")

FORMATS: Final = {"application/x-ndjson": "ndjson", "application/ndjson": "ndjson", "text/csv": "csv"}
ACCEPTED, REJECTED = "accepted", "rejected"
SQLITE_CHUNK: Final = 50  # rows per transaction on SQLite, whatever the setting: its one writer held briefly
SQLITE_PAUSE: Final = 0.05  # seconds between chunks on SQLite, for other writers
RECEIVED_KEEP_DAYS: Final = 7  # an upload never confirmed (answered 503, never sent again): deleted after
MAX_FAILURES: Final = 3  # a chunk failing this many times running ends the job: its rows say so


class BatchError(Exception):
    """The upload as a whole is refused: `status`, a stable `code`, and a message that quotes no data."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_rows(body: bytes, fmt: str, *, max_rows: int) -> list[str]:
    """The upload's rows, each as JSON text: an NDJSON line as sent (checked row by row later, so that one
    bad line rejects that row only), a CSV record as its non-empty cells by column. Blank lines are no
    rows; a CSV's header is none either."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchError(400, "BAD_BATCH", "The batch is not UTF-8 text.") from None
    if "\x00" in text:
        raise BatchError(400, "BAD_BATCH", "The batch holds NUL characters (is it UTF-16? send UTF-8).")
    if fmt == "ndjson":
        # Split at line feeds only: JSON strings may hold U+2028 and other characters Python also breaks at.
        rows = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    else:
        rows = _csv_rows(text, max_rows)
    if not rows:
        raise BatchError(400, "BAD_BATCH", "The batch has no rows.")
    if len(rows) > max_rows:
        raise BatchError(413, "BATCH_TOO_LARGE", f"A batch may have at most {max_rows} rows.")
    return rows


def _csv_rows(text: str, max_rows: int) -> list[str]:
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader, None)
        if header is None:
            return []
        columns = [c.strip() for c in header]
        unknown = sorted(set(columns) - set(ROW_COLUMNS))
        if unknown or "report" not in columns or len(set(columns)) != len(columns):
            raise BatchError(
                400, "BAD_BATCH",
                f"The header must name columns among: {', '.join(ROW_COLUMNS)}, with report, each once.",
            )  # fmt: skip
        rows: list[str] = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(columns):
                cells = {"_cells": len(record)}  # rejected as its row: the count is all it says
                rows.append(json.dumps(cells))
            else:
                rows.append(json.dumps({c: v for c, v in zip(columns, record, strict=True) if v != ""}))
            if len(rows) > max_rows:
                break
        return rows
    except csv.Error:
        raise BatchError(400, "BAD_BATCH", "The batch is not valid CSV (a quote left open?).") from None


def content_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Upload:
    client_id: str
    agreement_id: str
    acting_user: str | None
    officer_issuer: str | None
    case_reference: str | None
    format: str
    idempotency_key: str
    content_sha256: str
    rows: list[str]
    upload_event_id: str  # the upload request's own event: its job runs once that is written


async def create_batch(engine: AsyncEngine, upload: Upload) -> tuple[dict[str, Any], bool]:
    """The job for this upload, and whether it is new. The same key with the same content is the same job
    (an upload retried); with other content it is refused (IDEMPOTENCY_KEY_REUSED)."""
    mine = (batches.c.client_id == upload.client_id) & (batches.c.idempotency_key == upload.idempotency_key)
    async with engine.begin() as conn:
        found = (await conn.execute(select(batches).where(mine))).first()
        if found is None:
            job = {
                "id": uuid.uuid4().hex, "client_id": upload.client_id, "agreement_id": upload.agreement_id,
                "acting_user": upload.acting_user, "officer_issuer": upload.officer_issuer,
                "case_reference": upload.case_reference, "format": upload.format,
                "content_sha256": upload.content_sha256, "idempotency_key": upload.idempotency_key,
                "row_count": len(upload.rows), "processed": 0, "accepted": 0, "rejected": 0,
                "state": RECEIVED, "stop_code": None, "event_id": uuid.uuid4().hex,
                "created_at": datetime.now(UTC), "finished_at": None, "lease_until": None,
                "lease_owner": None, "failures": 0, "upload_event_id": upload.upload_event_id,
            }  # fmt: skip
            try:
                async with conn.begin_nested():
                    await conn.execute(insert(batches).values(**job))
                    await conn.execute(
                        insert(batch_rows),
                        [
                            {"batch_id": job["id"], "row_no": n, "body": body}
                            for n, body in enumerate(upload.rows, 1)
                        ],
                    )
            except IntegrityError:
                found = (await conn.execute(select(batches).where(mine))).first()
                if found is None:  # pragma: no cover - not a race on the key after all
                    raise
            else:
                return job, True
    job = dict(found._mapping)
    if job["content_sha256"] != upload.content_sha256:
        raise BatchError(
            409, "IDEMPOTENCY_KEY_REUSED", "This Idempotency-Key was used for a different batch."
        )
    return job, False


async def find_batch(engine: AsyncEngine, batch_id: str, client_id: str) -> dict[str, Any] | None:
    """A job, for the client that uploaded it only (another's and none are alike)."""
    async with engine.connect() as conn:
        found = await conn.execute(
            select(batches).where(batches.c.id == batch_id, batches.c.client_id == client_id)
        )
        row = found.first()
    return None if row is None else dict(row._mapping)


async def row_results(engine: AsyncEngine, batch_id: str) -> list[dict[str, Any]]:
    """Each row done so far, in order: its number, accepted (with the id of what it made) or rejected (code
    and message). Never the row's content, nor whom it was about."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(batch_rows.c.row_no, batch_rows.c.status, batch_rows.c.code, batch_rows.c.message,
                   batch_rows.c.result_id)
            .where(batch_rows.c.batch_id == batch_id, batch_rows.c.status.is_not(None))
            .order_by(batch_rows.c.row_no)
        )  # fmt: skip
        out = []
        for number, status, code, message, result in rows:
            done: dict[str, Any] = {"row": number, "status": status}
            if status == ACCEPTED:
                done["id"] = result
            else:
                done["code"], done["message"] = code, message
            out.append(done)
        return out


def progress(job: Mapping[str, Any]) -> dict[str, Any]:
    """What a partner sees of its job."""
    rows, processed = job["row_count"], job["processed"]
    shown: dict[str, Any] = {
        "id": job["id"], "state": job["state"], "format": job["format"], "rows": rows, "processed": processed,
        "accepted": job["accepted"], "rejected": job["rejected"], "percent": processed * 100 // rows,
        "receivedAt": _iso(job["created_at"]), "finishedAt": _iso(job["finished_at"]),
        "stopCode": job["stop_code"], "eventId": job["event_id"] if job["state"] == DONE else None,
        "links": {"self": f"/batches/{job['id']}", "results": f"/batches/{job['id']}/results"},
    }  # fmt: skip
    return shown


def _iso(moment: datetime | None) -> str | None:
    made = utc(moment)
    return None if made is None else made.isoformat().replace("+00:00", "Z")


class _LeaseLostError(Exception):
    """Another process holds the job now: this one's chunk is rolled back and it stops."""


@dataclass
class _Done:
    row_no: int
    status: str
    code: str | None = None
    message: str | None = None
    result_id: str | None = None
    person_id: int | None = None


class BatchRunner:
    """Works through jobs, one task per job in this process, each under a lease in the database."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        ledger: LedgerWriter | None,
        agreements: Mapping[str, Agreement],
        refs: Mapping[str, RefCodec],
        contributions: ContributionStore,
        today: Callable[[], date],
        chunk_rows: int,
        lease_seconds: int,
    ) -> None:
        self._engine = engine
        self._ledger = ledger
        self._agreements = agreements
        self._refs = refs
        self._contributions = contributions
        self._today = today
        self._chunk = chunk_rows
        self._lease = timedelta(seconds=lease_seconds)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._me = uuid.uuid4().hex  # this runner, as the lease names it
        self.on_chunk: Callable[[str], Awaitable[None]] | None = None  # tests: stop a job part-way

    def start(self, batch_id: str) -> None:
        """Work on the job in the background, unless this process already is."""
        running = self._tasks.get(batch_id)
        if running is not None and not running.done():
            return
        task = asyncio.get_running_loop().create_task(self.run(batch_id), name=f"batch {batch_id}")
        self._tasks[batch_id] = task
        task.add_done_callback(
            lambda _: self._tasks.pop(batch_id, None) if self._tasks.get(batch_id) is task else None
        )

    async def resume(self) -> int:
        """Take up every unfinished job whose lease ran out (its process stopped), and every upload whose
        own event a stopped process wrote without starting its job. Returns how many."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            written = exists().where(audit_events.c.id == batches.c.upload_event_id)
            await conn.execute(
                update(batches).where(batches.c.state == RECEIVED, written).values(state=RUNNING)
            )
        async with self._engine.connect() as conn:
            stale = (
                (
                    await conn.execute(
                        select(batches.c.id).where(
                            batches.c.state.in_((RUNNING, SEALING)),
                            or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
                        )
                    )
                )
                .scalars()
                .all()
            )
        for batch_id in stale:
            self.start(batch_id)
        return len(stale)

    def resume_if_stale(self, job: Mapping[str, Any]) -> None:
        lease = utc(job["lease_until"])
        if job["state"] in (RUNNING, SEALING) and (lease is None or lease < datetime.now(UTC)):
            self.start(job["id"])

    async def accepted(self, batch_id: str) -> None:
        """The upload's own event is written: its job may run (until then it is only `received`, and no
        process takes it up: the partner was told the upload failed, and sends it again)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.state == RECEIVED)
                .values(state=RUNNING)
            )
            job = (await conn.execute(select(batches).where(batches.c.id == batch_id))).one()
        self.resume_if_stale(dict(job._mapping))

    async def wait(self, batch_id: str) -> None:
        """Until this process's work on the job ends (tests, and the benchmark)."""
        task = self._tasks.get(batch_id)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        """Stop working (shutdown): each job's lease runs out and another process takes it up."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, batch_id: str) -> None:
        try:
            if not await self._claim(batch_id):
                return  # another process holds it
            await self._work(batch_id)
            await self._release(batch_id)
        except _LeaseLostError:
            return  # another process goes on with it
        except asyncio.CancelledError:
            # Shutdown: let the job go at once, for the next process to take up.
            await asyncio.shield(self._release(batch_id))
            raise
        except Exception as error:
            # Kept under the lease until it runs out (a row, a chunk or the database at fault is not tried
            # again at once), then taken up again; nothing about its rows is logged. A fault that is not the
            # database's being away counts towards MAX_FAILURES.
            unavailable = is_unavailable(error)
            if not unavailable:
                await self._failed(batch_id)
            # The cause by type and stack frames, never the exception's message: a driver's or a library's
            # message may quote a row's value (a name, a date of birth).
            log.log(
                logging.WARNING if unavailable else logging.ERROR,
                "batch stopped; it will be taken up again",
                extra={
                    "batch": batch_id,
                    "error_type": type(error).__name__,
                    "frames": [] if unavailable else traceback.format_tb(error.__traceback__),
                },
            )

    async def _failed(self, batch_id: str) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(batches).where(batches.c.id == batch_id).values(failures=batches.c.failures + 1)
                )
        except Exception as error:  # counted next time, if the database will not count it now
            log.warning("a batch failure not counted", extra={"error_type": type(error).__name__})

    async def _claim(self, batch_id: str) -> bool:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            taken = await conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.state.in_((RUNNING, SEALING)),
                    or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
                )
                .values(lease_until=now + self._lease, lease_owner=self._me)
            )
        return taken.rowcount == 1

    async def _release(self, batch_id: str) -> None:
        """Let the job go, if this runner still holds it (another may have taken it up since)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == self._me)
                .values(lease_until=None, lease_owner=None)
            )

    async def _work(self, batch_id: str) -> None:
        while True:
            async with self._engine.connect() as conn:
                job = dict(
                    (await conn.execute(select(batches).where(batches.c.id == batch_id))).one()._mapping
                )
            if job["lease_owner"] != self._me:
                return  # another process took it up (this one was slower than its lease): it goes on
            if job["state"] == RUNNING:
                await self._chunk_of(job)
                if self.on_chunk is not None:
                    await self.on_chunk(batch_id)
                if self._engine.dialect.name == "sqlite":
                    # SQLite has one writer: a pause between chunks lets other requests write their events.
                    await asyncio.sleep(SQLITE_PAUSE)
            elif job["state"] == SEALING:
                await self._seal(job)
                return
            else:
                return

    async def _chunk_of(self, job: dict[str, Any]) -> None:
        async with self._engine.connect() as conn:
            pending = (
                await conn.execute(
                    select(batch_rows.c.row_no, batch_rows.c.body)
                    .where(batch_rows.c.batch_id == job["id"], batch_rows.c.status.is_(None))
                    .order_by(batch_rows.c.row_no)
                    # SQLite's one writer is held for a chunk: a short one, so that nobody waits long.
                    .limit(min(self._chunk, SQLITE_CHUNK) if conn.dialect.name == "sqlite" else self._chunk)
                )
            ).all()
        if not pending:
            async with self._engine.begin() as conn:
                await conn.execute(update(batches).where(batches.c.id == job["id"]).values(state=SEALING))
            return
        agreement = self._agreements.get(job["agreement_id"])
        # Once stopped, stopped; a chunk that failed MAX_FAILURES times running ends the job (never for ever).
        stop = (
            job["stop_code"]
            or ("BATCH_FAILED" if job["failures"] >= MAX_FAILURES else None)
            or await self._stop_code(job, agreement)
        )
        # The chunk's reports and its results in one transaction: all of it is done, or none (and a chunk
        # done again gives the same results, each row's key finding its first answer).
        async with self._engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # Begun now, not at the first write: the driver would otherwise commit each row's savepoint.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            done: list[_Done] = []
            if stop is not None or agreement is None:
                code = stop or "FORBIDDEN"
                message = (
                    "The batch could not be completed: this row was not done."
                    if code == "BATCH_FAILED"
                    else "The batch was stopped: the agreement or the client is no longer in force."
                )
                done = [_Done(n, REJECTED, code, message) for n, _ in pending]
            else:
                context = self._context(job, agreement, conn)
                for number, body in pending:
                    done.append(await self._row(context, agreement, job, number, body))
            await self._record(conn, job, done, stopped=stop)

    async def _stop_code(self, job: Mapping[str, Any], agreement: Agreement | None) -> str | None:
        """Why the rest of the job may not go on, checked before every chunk: the agreement no longer in
        force for this purpose, or the client disabled or moved to another agreement."""
        if agreement is None:
            return "FORBIDDEN"
        decision = evaluate(agreement, self._purpose(job), today=self._today())
        if not decision.allowed:
            return str(decision.code)
        async with self._engine.connect() as conn:
            client = (
                await conn.execute(
                    select(clients.c.agreement_id, clients.c.disabled_at).where(
                        clients.c.client_id == job["client_id"]
                    )
                )
            ).first()
        if client is None or client.disabled_at is not None or client.agreement_id != job["agreement_id"]:
            return "CLIENT_DISABLED"
        return None

    def _purpose(self, job: Mapping[str, Any]) -> PurposeContext:
        return PurposeContext(
            acting_user=job["acting_user"],
            case_reference=job["case_reference"],
            acting_user_verified=job["officer_issuer"] is not None,
        )

    def _context(self, job: Mapping[str, Any], agreement: Agreement, conn: AsyncConnection) -> ViewContext:
        decision = evaluate(agreement, self._purpose(job), today=self._today())

        @asynccontextmanager
        async def same_connection() -> AsyncIterator[AsyncConnection]:
            yield conn

        return ViewContext(
            decision=decision,
            refs=self._refs[agreement.id],
            connect=same_connection,
            acting_user=job["acting_user"],
            client_id=job["client_id"],
            contributions=self._contributions.within(conn),
            event_id=job["event_id"],
        )

    async def _row(
        self,
        context: ViewContext,
        agreement: Agreement,
        job: Mapping[str, Any],
        number: int,
        body: str | None,
    ) -> _Done:
        try:
            row = parse_json((body or "").encode())
        except InvalidJsonError:
            return _Done(number, REJECTED, "BAD_ROW", "The row is not a JSON object.")
        if not isinstance(row, dict) or "_cells" in row:
            return _Done(
                number, REJECTED, "BAD_ROW", "The row is not a JSON object, or has the wrong number of cells."
            )
        # A row without its own key is keyed by the upload's key and its place: the same upload sent again
        # under another key is new rows, as a new request would be.
        default_key = f"{job['idempotency_key']}.{number}"
        try:
            made, person = await submit_row(context, agreement, row, default_key=default_key)
        except ViewError as refused:
            return _Done(number, REJECTED, refused.code, str(refused)[:300])
        except (ArithmeticError, RecursionError, TypeError, ValueError) as error:
            # A value no check foresaw: this row is refused, the rest go on (logged by type, not content).
            log.warning("a batch row could not be read", extra={"error_type": type(error).__name__})
            return _Done(number, REJECTED, "BAD_ROW", "The row holds a value that cannot be read.")
        return _Done(number, ACCEPTED, result_id=made, person_id=person)

    async def _record(
        self, conn: AsyncConnection, job: Mapping[str, Any], done: list[_Done], *, stopped: str | None
    ) -> None:
        """The chunk's results and the job's progress, the lease renewed: only rows no other process recorded
        meanwhile, counted once (the job's row locked first, on PostgreSQL, so two cannot interleave)."""
        locked = select(batches.c.lease_owner).where(batches.c.id == job["id"])
        owner = (
            await conn.execute(locked.with_for_update() if conn.dialect.name == "postgresql" else locked)
        ).scalar_one()
        if owner != self._me:
            # Another process took the job up while this chunk ran: none of this chunk stands (its reports
            # roll back with it); that process records its own.
            raise _LeaseLostError
        recorded = set(
            (
                await conn.execute(
                    select(batch_rows.c.row_no).where(
                        batch_rows.c.batch_id == job["id"],
                        batch_rows.c.row_no.in_([d.row_no for d in done]),
                        batch_rows.c.status.is_not(None),
                    )
                )
            ).scalars()
        )
        done = [d for d in done if d.row_no not in recorded]
        if not done:
            return
        accepted = sum(1 for d in done if d.status == ACCEPTED)
        await conn.execute(
            update(batch_rows)
            .where(
                batch_rows.c.batch_id == bindparam("b_batch"), batch_rows.c.row_no == bindparam("b_row")
            )
            .values(
                status=bindparam("b_status"), code=bindparam("b_code"), message=bindparam("b_message"),
                result_id=bindparam("b_result"), person_id=bindparam("b_person"), body=None,
            ),
            [
                {"b_batch": job["id"], "b_row": d.row_no, "b_status": d.status, "b_code": d.code,
                 "b_message": d.message, "b_result": d.result_id, "b_person": d.person_id}
                for d in done
            ],
        )  # fmt: skip
        await conn.execute(
            update(batches)
            .where(batches.c.id == job["id"])
            .values(
                processed=batches.c.processed + len(done),
                accepted=batches.c.accepted + accepted,
                rejected=batches.c.rejected + len(done) - accepted,
                failures=0,
                lease_until=datetime.now(UTC) + self._lease,
                **({"stop_code": stopped} if stopped else {}),
            )
        )

    async def _seal(self, job: Mapping[str, Any]) -> None:
        """The batch's one event, then its reports count and its referrals are matched; the job done."""
        async with self._engine.begin() as conn:
            still_mine = await conn.execute(
                update(batches)
                .where(batches.c.id == job["id"], batches.c.lease_owner == self._me)
                .values(lease_until=datetime.now(UTC) + self._lease)
            )
        if still_mine.rowcount != 1:
            return  # another process took it up: it seals
        async with self._engine.connect() as conn:
            written = (
                await conn.execute(select(audit_events.c.id).where(audit_events.c.id == job["event_id"]))
            ).first()
            people = (
                (
                    await conn.execute(
                        select(batch_rows.c.person_id)
                        .where(
                            batch_rows.c.batch_id == job["id"],
                            batch_rows.c.status == ACCEPTED,
                            batch_rows.c.person_id.is_not(None),
                        )
                        .distinct()
                    )
                )
                .scalars()
                .all()
            )
        if written is None and self._ledger is not None:
            try:
                await self._ledger.record(self._event(job, sorted(people)))
            except AuditUnavailableError:
                log.warning("batch waits for the ledger", extra={"batch": job["id"]})
                return  # still sealing: taken up again when its progress is next asked for
        await self._contributions.recorded(job["event_id"])
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == job["id"])
                .values(state=DONE if job["stop_code"] is None else STOPPED, finished_at=datetime.now(UTC))
            )

    def _event(self, job: Mapping[str, Any], people: list[int]) -> EventDraft:
        agreement = self._agreements.get(job["agreement_id"])
        created = utc(job["created_at"])
        assert created is not None
        return EventDraft(
            id=job["event_id"],
            endpoint="batch",
            outcome="allowed" if job["stop_code"] is None else "denied",
            http_status=0,  # not a request: the upload's own request has its event
            latency_us=int((datetime.now(UTC) - created).total_seconds() * 1_000_000),
            client_id=job["client_id"],
            agreement_id=job["agreement_id"],
            agreement_version=agreement.version if agreement else None,
            purpose=agreement.purpose if agreement else None,
            lawful_basis=agreement.lawful_basis if agreement else (),
            decision_rule="batch",
            acting_user=job["acting_user"],
            officer_issuer=job["officer_issuer"],
            case_reference=job["case_reference"],
            operation_name=f"batch {job['id']}: {job['accepted']} of {job['row_count']} rows accepted",
            document_sha256=job["content_sha256"],
            fields_disclosed=(FIELD,) if people else (),
            error_code=job["stop_code"],
            trace_id=trace_id_hex(),
            disclosures=tuple((person, (FIELD,)) for person in people),
        )
