"""The audit ledger's writer: one event per request, committed before the response leaves.

Requests hand an `EventDraft` to `LedgerWriter.record` and wait. One writer task per process takes
whatever has queued up while the previous commit was in flight and commits it as one transaction
(group commit): under load many requests share one round trip, and an idle gateway commits at once.

Each process writes its own hash chain (its `chain_id`), so no lock is shared between replicas:
event n carries the hash of event n-1, and its own hash covers its content, its disclosures and that
predecessor. Every `checkpoint_every` events or `checkpoint_seconds`, and on close, the writer signs
the chain head with the gateway's signing key. `gateway audit verify` checks all of it offline.

The writer writes through one connection of its own, on which it holds its chain's lock (see
`gateway.audit.chains`): a chain is sealed from outside only when its writer is gone. If the chain
was sealed while the writer had lost its connection, the writer starts a new chain. With a witness,
the chain's registration, every checkpoint and a periodic ledger-wide head are also appended
outside the database (`gateway.audit.witness`), after the commit that made them true.

If a batch cannot be committed, every request in it gets `AuditUnavailableError` and must send no
data. A batch that failed after the database did commit it is recorded but not answered: the
ledger may over-state, never under-state, what was disclosed.

Exceptions:
    AuditUnavailableError   the event could not be made durable; answer AUDIT_UNAVAILABLE, no data
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, Tracer
from sqlalchemy import Table, exists, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.chains import (
    hold_file_lock,
    lock_directory,
    release_file_lock,
    release_lock,
    sign_checkpoint,
    take_lock,
)
from gateway.audit.events import GENESIS, EventDraft, event_row, now_text
from gateway.audit.tables import audit_chains, audit_checkpoints, audit_disclosures, audit_events
from gateway.audit.witness import Witness, chain_positions
from gateway.db import is_unavailable
from gateway.keys import SigningKeys

# PostgreSQL: monthly partitions kept ready this many months ahead of the current one.
PARTITION_MONTHS_AHEAD = 3

log = logging.getLogger("gateway.ledger")


class AuditUnavailableError(Exception):
    pass


class _WithdrawnError(Exception):
    """A request in the batch stopped waiting before the commit: roll back and write the others."""


class _ChainLockedError(Exception):
    """Another session holds this chain's lock (a sealer at work): try again at the next batch."""


@dataclass
class _Pending:
    draft: EventDraft
    done: asyncio.Future[None]
    request_span: SpanContext  # the request waiting on this event: its trace is linked from the commit


class LedgerWriter:
    """Group-committing writer of one hash chain. Create one per process; `close()` on shutdown."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        signing: SigningKeys | None,
        writer: str = "gateway",
        max_batch: int = 256,
        max_queue: int = 10_000,
        commit_timeout: float = 10.0,
        checkpoint_every: int = 1_000,
        checkpoint_seconds: float = 60.0,
        head_seconds: float = 300.0,
        heads: bool = True,
        witness: Witness | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.chain_id = str(uuid.uuid4())
        self._engine = engine
        self._signing = signing
        self._writer = writer
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._commit_timeout = commit_timeout
        self._checkpoint_every = checkpoint_every
        self._checkpoint_seconds = checkpoint_seconds
        self._head_seconds = head_seconds
        self._heads = heads  # a short-lived writer (a CLI run) leaves the ledger-wide heads to the gateways
        self._witness = witness
        self._on_batch = on_batch
        self._on_failure = on_failure
        self._tracer = tracer or trace.NoOpTracer()
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._task: asyncio.Task[None] | None = None
        # What is known to be committed: None until read or written, and again after a failure.
        self._head: tuple[int, str] | None = None
        self._registered = False
        self._partitions_month: str | None = None
        self._partitions_retry_at = 0.0
        self._recorded: str | None = None  # recorded_at of the chain's last event
        self._checkpointed_seq = 0
        self._checkpointed_at = time.monotonic()
        self._closed = False
        self._conn: AsyncConnection | None = None  # PostgreSQL: holds the chain's lock while it is open
        self._file_lock: int | None = None  # SQLite: the chain's lock file, held from registration to close
        self._witnessed: dict[str, tuple[int, str]] = {}  # chain positions this writer's heads named
        self._headed_at = time.monotonic()
        self._registration: dict[str, object] | None = None  # a registration committed, not witnessed

    async def record(self, draft: EventDraft) -> None:
        """Return once the event and its disclosures are committed; else raise AuditUnavailableError."""
        if self._closed:
            raise AuditUnavailableError("the ledger writer is closed")
        queue = self._running_queue()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait(_Pending(draft, done, trace.get_current_span().get_span_context()))
        except asyncio.QueueFull:
            raise AuditUnavailableError("the ledger's queue is full") from None
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=self._commit_timeout)
        except (TimeoutError, asyncio.CancelledError) as stopped:
            if done.done() and not done.cancelled() and done.exception() is None:
                if isinstance(stopped, asyncio.CancelledError):
                    raise
                return  # committed just as the wait ran out: the request may answer after all
            # The request will send nothing, so withdraw its event: the writer skips withdrawn
            # events. One already being written is recorded anyway (the ledger may over-state).
            done.cancel()
            if isinstance(stopped, asyncio.CancelledError):
                raise
            raise AuditUnavailableError("the ledger did not commit in time") from None

    async def close(self) -> None:
        """Write what is queued, sign the chain head as final, and stop. Later records are refused."""
        self._closed = True
        if self._task is not None and self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.put(None), timeout=self._commit_timeout)
                await self._task
            except Exception:
                log.error("the ledger writer stopped badly", extra={"chain_id": self.chain_id}, exc_info=True)
            self._task = None
        if self._head is not None and self._head[0] > 0 and self._signing is not None:
            await self._standalone_checkpoint(*self._head, final=True)
        await self._witness_head()
        await self._disconnect()
        self._release_file_lock()
        if self._witness is not None:
            await self._witness.flush()

    def _running_queue(self) -> asyncio.Queue[_Pending | None]:
        if self._task is None or self._task.done() or self._queue is None:
            self._queue = asyncio.Queue(maxsize=self._max_queue)
            # An empty context: the writer serves every request, and must not run inside the trace of
            # whichever request happened to start it.
            self._task = asyncio.create_task(
                self._run(self._queue), name=f"ledger-writer-{self.chain_id}", context=contextvars.Context()
            )
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Pending | None]) -> None:
        stopping = False
        while True:
            if not stopping:
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=self._checkpoint_seconds)
                except TimeoutError:
                    await self._idle_checkpoint()
                    if time.monotonic() - self._headed_at >= self._head_seconds:
                        await self._witness_head()
                    continue
                if first is None:
                    stopping = True
                batch = [] if first is None else [first]
            else:
                batch = []
            # Take what has queued up, up to a batch; once stopping, drain everything that is left.
            while len(batch) < self._max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                await self._commit(batch)
            if stopping and queue.empty():
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        links = [Link(p.request_span) for p in batch if p.request_span.is_valid]
        with self._tracer.start_as_current_span(
            "audit.commit",
            links=links,
            attributes={"gateway.audit.batch_size": len(batch), "gateway.audit.chain_id": self.chain_id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if not await self._commit_batch(batch):
                span.set_status(Status(StatusCode.ERROR, "AuditUnavailableError"))

    async def _commit_batch(self, batch: list[_Pending]) -> bool:
        """Commit the events of the batch whose requests still wait; True if none was refused."""
        started = time.perf_counter()
        while True:
            batch = [pending for pending in batch if not pending.done.done()]  # withdrawn: never answered
            if not batch:
                return True
            try:
                seq, prev_hash, checkpoint = await self._write(batch)
            except _WithdrawnError:
                continue  # rolled back; write the others again, without the withdrawn events
            except Exception:
                return await self._refuse(batch)
            break
        self._registered, self._head = True, (seq, prev_hash)
        if checkpoint is not None:
            self._checkpointed(seq)
        if self._on_batch:
            self._on_batch(len(batch), time.perf_counter() - started)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(None)
        await self._witness_commit(checkpoint)
        return True

    async def _write(self, batch: list[_Pending]) -> tuple[int, str, dict[str, Any] | None]:
        try:
            async with self._chain_connection() as conn:
                return await self._write_on(conn, batch)
        except _WithdrawnError:
            raise
        except Exception as error:
            if self._conn is None or not (self._conn.invalidated or is_unavailable(error)):
                raise
        # The held connection had died (the server restarted, or dropped it): once more on a new one,
        # which takes the chain's lock again and reads the chain's state first.
        await self._disconnect()
        async with self._chain_connection() as conn:
            return await self._write_on(conn, batch)

    async def _write_on(
        self, conn: AsyncConnection, batch: list[_Pending]
    ) -> tuple[int, str, dict[str, Any] | None]:
        if self._head is None:
            await self._load_state(conn)
        assert self._head is not None
        await self._ensure_partitions(conn)
        registration = None
        async with conn.begin():
            if not self._registered:
                self._hold_file_lock()
                registration = {
                    "chain_id": self.chain_id, "started_at": now_text(), "host": socket.gethostname()[:255],
                    "process_id": os.getpid(), "writer": self._writer,
                }  # fmt: skip
                await conn.execute(insert(audit_chains).values(**registration))
            seq, prev_hash = self._head
            rows, disclosures = [], []
            # Never earlier than the chain's last: a chain is in order by recorded_at (tables.py).
            recorded = max(now_text(), self._recorded or "")
            for pending in batch:
                seq += 1
                row = event_row(pending.draft, chain_id=self.chain_id, seq=seq, prev_hash=prev_hash)
                row["recorded_at"] = recorded
                prev_hash = row["hash"]
                rows.append(row)
                event_id = row["id"]
                disclosures += [
                    (event_id, person_id, ",".join(fields), recorded)
                    for person_id, fields in pending.draft.disclosures
                ]
            # Through SQLAlchemy first: that begins the transaction the COPY below must join.
            await conn.execute(insert(audit_events), rows)
            if disclosures:
                await _copy_or_insert(conn, audit_disclosures, DISCLOSURE_COLUMNS, disclosures)
            checkpoint = None
            if self._checkpoint_due(seq):
                assert self._signing is not None
                checkpoint = sign_checkpoint(self._signing, self.chain_id, seq, prev_hash, final=False)
                await conn.execute(insert(audit_checkpoints).values(**checkpoint))
            # A request that gave up while its event was being written sends nothing: its event must
            # not be committed as a disclosure. Checked as late as possible, just before COMMIT.
            if any(pending.done.done() for pending in batch):
                raise _WithdrawnError
        if registration is not None:
            self._registration = registration
        self._recorded = recorded
        return seq, prev_hash, checkpoint

    async def _ensure_partitions(self, conn: AsyncConnection) -> None:
        """PostgreSQL: this month's partitions and the next ones exist (once a month per writer; the
        function runs with its owner's rights, since the application role may do no DDL)."""
        month = now_text()[:7]
        if conn.dialect.name != "postgresql" or month == self._partitions_month:
            return
        if time.monotonic() < self._partitions_retry_at:
            return
        try:
            async with conn.begin():
                await conn.execute(
                    text("SELECT audit_ensure_partitions(:ahead)"), {"ahead": PARTITION_MONTHS_AHEAD}
                )
        except Exception as error:
            if conn.invalidated:
                raise  # the connection is gone: the batch fails and is retried as any other
            # A lock not granted within a second (a long reader on the ledger): this month's partition
            # was made months ago, so the events are written now and the months ahead made later.
            log.warning("ledger partitions not made yet", extra={"error_type": type(error).__name__})
            self._partitions_retry_at = time.monotonic() + 60
            return
        self._partitions_month = month

    async def _refuse(self, batch: list[_Pending]) -> bool:
        self._head = None  # the next write reads the chain's state again
        log.error(
            "audit ledger write failed", extra={"chain_id": self.chain_id, "batch": len(batch)}, exc_info=True
        )
        if self._on_failure:
            self._on_failure()
        if self._conn is not None and (self._conn.invalidated or self._conn.closed):
            await self._disconnect()
        if len(batch) > 1:
            # Whatever failed may be one event's doing: write them one at a time, so that only the
            # events that cannot be written are refused.
            written = [await self._commit_batch([pending]) for pending in batch]
            return all(written)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_exception(AuditUnavailableError("the ledger could not be written"))
        return False

    # -- the connection that holds the chain --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _chain_connection(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL: the connection that holds the chain's lock, kept between batches. SQLite (no
        advisory locks; the writer's process is its proof of life): a pooled connection per use."""
        if self._engine.dialect.name != "postgresql":
            async with self._engine.connect() as conn:
                yield conn
            return
        yield await self._connection()

    async def _connection(self) -> AsyncConnection:
        if self._conn is not None and not (self._conn.invalidated or self._conn.closed):
            return self._conn
        await self._disconnect()
        conn = await self._engine.connect()
        try:
            if not await take_lock(conn, self.chain_id):
                raise _ChainLockedError
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._head = None  # the chain may have moved on, or been sealed, while we were away
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.invalidated or conn.closed:
                await conn.close()
            else:
                await release_lock(conn, self.chain_id)
                await conn.close()
        except Exception as error:
            # A broken connection: drop it for good, which ends its session and with it the lock.
            log.warning("closing the ledger connection failed", extra={"error_type": type(error).__name__})
            with contextlib.suppress(Exception):  # it is already gone
                await conn.invalidate()

    def _hold_file_lock(self) -> None:
        directory = lock_directory(self._engine)
        if directory is None or self._file_lock is not None:
            return
        fd = hold_file_lock(directory, self.chain_id)
        if fd is None:
            raise _ChainLockedError
        self._file_lock = fd

    def _release_file_lock(self) -> None:
        directory = lock_directory(self._engine)
        if self._file_lock is not None and directory is not None:
            release_file_lock(directory, self.chain_id, self._file_lock)
        self._file_lock = None

    async def _load_state(self, conn: AsyncConnection) -> None:
        async with conn.begin():
            registered = bool(
                (
                    await conn.execute(select(exists().where(audit_chains.c.chain_id == self.chain_id)))
                ).scalar()
            )
            sealed = bool(
                (
                    await conn.execute(
                        select(
                            exists().where(
                                audit_checkpoints.c.chain_id == self.chain_id,
                                audit_checkpoints.c.final.is_(True),
                            )
                        )
                    )
                ).scalar()
            )
            last = (
                await conn.execute(
                    select(audit_events.c.seq, audit_events.c.hash, audit_events.c.recorded_at)
                    .where(audit_events.c.chain_id == self.chain_id)
                    .order_by(audit_events.c.seq.desc())
                    .limit(1)
                )
            ).first()
        if sealed:
            await self._start_new_chain(conn)
            return
        self._registered = registered
        self._head = (int(last.seq), str(last.hash)) if last else (0, GENESIS)
        self._recorded = last.recorded_at if last else None

    async def _start_new_chain(self, conn: AsyncConnection) -> None:
        """This chain was sealed from outside while the writer was cut off: go on in a new one."""
        old = self.chain_id
        await release_lock(conn, old)
        self._release_file_lock()
        self.chain_id = str(uuid.uuid4())
        if not await take_lock(conn, self.chain_id):
            raise _ChainLockedError
        log.warning("the ledger writer's chain was sealed elsewhere; it goes on in a new chain",
                    extra={"chain_id": self.chain_id, "sealed_chain_id": old})  # fmt: skip
        self._registered, self._head = False, (0, GENESIS)
        self._checkpointed_seq, self._checkpointed_at = 0, time.monotonic()

    # -- checkpoints and the witness -----------------------------------------------------------------

    def _checkpoint_due(self, seq: int) -> bool:
        if self._signing is None or seq <= self._checkpointed_seq:
            return False
        return (
            seq - self._checkpointed_seq >= self._checkpoint_every
            or time.monotonic() - self._checkpointed_at >= self._checkpoint_seconds
        )

    async def _idle_checkpoint(self) -> None:
        if self._head is not None and self._checkpoint_due(self._head[0]):
            await self._standalone_checkpoint(*self._head)

    async def _standalone_checkpoint(self, seq: int, head_hash: str, *, final: bool = False) -> None:
        assert self._signing is not None
        try:
            async with self._chain_connection() as conn:
                if self._head is None:  # reconnected: make sure the chain is still ours
                    await self._load_state(conn)
                    if self._head != (seq, head_hash):
                        return
                row = sign_checkpoint(self._signing, self.chain_id, seq, head_hash, final=final)
                async with conn.begin():
                    await conn.execute(insert(audit_checkpoints).values(**row))
        except Exception:
            log.error("could not write a checkpoint", extra={"chain_id": self.chain_id}, exc_info=True)
            if self._conn is not None and (self._conn.invalidated or self._conn.closed):
                await self._disconnect()
            return
        self._checkpointed(seq)
        await self._witness_commit(row)

    def _checkpointed(self, seq: int) -> None:
        self._checkpointed_seq = seq
        self._checkpointed_at = time.monotonic()

    async def _witness_commit(self, checkpoint: dict[str, Any] | None) -> None:
        """After a commit: witness a new chain's registration and any checkpoint it carried."""
        if self._witness is None:
            return
        if self._registration is not None:
            registration, self._registration = self._registration, None
            self._witness.chain(**registration)  # type: ignore[arg-type]
        if checkpoint is not None:
            self._witness.checkpoint(self.chain_id, checkpoint["signature"])
            if time.monotonic() - self._headed_at >= self._head_seconds:
                await self._witness_head()

    async def _witness_head(self) -> None:
        """Witness the signed positions of chains: at first the open ones (a closed chain's end is in
        its own witness already), then every chain whose position moved since this writer's last head."""
        if self._witness is None or not self._heads:
            return
        self._headed_at = time.monotonic()
        try:
            async with self._chain_connection() as conn, conn.begin():
                positions = await chain_positions(conn)
        except Exception:
            log.error("could not read the ledger head", extra={"chain_id": self.chain_id}, exc_info=True)
            return
        first = not self._witnessed
        changed = {
            chain: (seq, head_hash)
            for chain, (seq, head_hash, closed) in positions.items()
            if (not closed if first else self._witnessed.get(chain) != (seq, head_hash))
        }
        self._witnessed.update({chain: (seq, head_hash) for chain, (seq, head_hash, _) in positions.items()})
        if changed:
            self._witness.head(self.chain_id, changed)


# The order of each disclosure row's values, as the writer makes them.
DISCLOSURE_COLUMNS: Final = ("event_id", "person_id", "fields", "recorded_at")


async def _copy_or_insert(
    conn: AsyncConnection, table: Table, columns: tuple[str, ...], records: list[tuple[Any, ...]]
) -> None:
    """The batch's rows of one table, in its open transaction (already begun by a statement through
    SQLAlchemy). On PostgreSQL through asyncpg by COPY: one statement for the batch, where an INSERT
    executed per row cost the database more than anything else a page asks of it (100 people, 100
    disclosure rows)."""
    if conn.dialect.driver != "asyncpg":
        await conn.execute(insert(table), [dict(zip(columns, record, strict=True)) for record in records])
        return
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not driver.is_in_transaction():
        # Outside a transaction the COPY would commit on its own, before the batch's other rows.
        raise RuntimeError("the ledger's COPY must run inside the batch's transaction")
    await driver.copy_records_to_table(table.name, records=records, columns=columns)
