"""The audit ledger's writer: one event per request, committed before the response leaves.

Requests hand an `EventDraft` to `LedgerWriter.record` and wait. One writer task per process takes
whatever has queued up while the previous commit was in flight and commits it as one transaction
(group commit): under load many requests share one round trip, and an idle gateway commits at once.

Each process writes its own hash chain (its `chain_id`), so no lock is shared between replicas:
event n carries the hash of event n-1, and its own hash covers its content, its disclosures and that
predecessor. Every `checkpoint_every` events or `checkpoint_seconds`, and on close, the writer signs
the chain head with the gateway's signing key. `gateway audit verify` checks all of it offline.

If a batch cannot be committed, every request in it gets `AuditUnavailableError` and must send no
data. A batch that failed after the database did commit it is recorded but not answered: the
ledger may over-state, never under-state, what was disclosed.

Exceptions:
    AuditUnavailableError   the event could not be made durable; answer AUDIT_UNAVAILABLE, no data
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from joserfc import jws
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, Tracer
from sqlalchemy import exists, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.events import CHECKPOINT_TYPE, GENESIS, EventDraft, checkpoint_payload, event_row, now_text
from gateway.audit.tables import audit_chains, audit_checkpoints, audit_disclosures, audit_events
from gateway.keys import ALGORITHM, SigningKeys

log = logging.getLogger("gateway.ledger")


class AuditUnavailableError(Exception):
    pass


class _WithdrawnError(Exception):
    """A request in the batch stopped waiting before the commit: roll back and write the others."""


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
        self._on_batch = on_batch
        self._on_failure = on_failure
        self._tracer = tracer or trace.NoOpTracer()
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._task: asyncio.Task[None] | None = None
        # What is known to be committed: None until read or written, and again after a failure.
        self._head: tuple[int, str] | None = None
        self._registered = False
        self._checkpointed_seq = 0
        self._checkpointed_at = time.monotonic()
        self._closed = False

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
                seq, prev_hash, checkpointed = await self._write(batch)
            except _WithdrawnError:
                continue  # rolled back; write the others again, without the withdrawn events
            except Exception:
                return await self._refuse(batch)
            break
        self._registered, self._head = True, (seq, prev_hash)
        if checkpointed:
            self._checkpointed(seq)
        if self._on_batch:
            self._on_batch(len(batch), time.perf_counter() - started)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(None)
        return True

    async def _write(self, batch: list[_Pending]) -> tuple[int, str, bool]:
        async with self._engine.begin() as conn:
            registered, head = (self._registered, self._head) if self._head else await self._read_state(conn)
            if not registered:
                await conn.execute(
                    insert(audit_chains).values(
                        chain_id=self.chain_id,
                        started_at=now_text(),
                        host=socket.gethostname()[:255],
                        process_id=os.getpid(),
                        writer=self._writer,
                    )
                )
            seq, prev_hash = head
            rows, disclosures = [], []
            for pending in batch:
                seq += 1
                row = event_row(pending.draft, chain_id=self.chain_id, seq=seq, prev_hash=prev_hash)
                prev_hash = row["hash"]
                rows.append(row)
                disclosures += [
                    {"event_id": row["id"], "person_id": person_id, "fields": ",".join(fields)}
                    for person_id, fields in pending.draft.disclosures
                ]
            await conn.execute(insert(audit_events), rows)
            if disclosures:
                await conn.execute(insert(audit_disclosures), disclosures)
            checkpointed = self._checkpoint_due(seq)
            if checkpointed:
                await self._checkpoint(conn, seq, prev_hash)
            # A request that gave up while its event was being written sends nothing: its event must
            # not be committed as a disclosure. Checked as late as possible, just before COMMIT.
            if any(pending.done.done() for pending in batch):
                raise _WithdrawnError
        return seq, prev_hash, checkpointed

    async def _refuse(self, batch: list[_Pending]) -> bool:
        self._head = None  # the next write reads the chain's state again
        log.error(
            "audit ledger write failed", extra={"chain_id": self.chain_id, "batch": len(batch)}, exc_info=True
        )
        if self._on_failure:
            self._on_failure()
        if len(batch) > 1:
            # Whatever failed may be one event's doing: write them one at a time, so that only the
            # events that cannot be written are refused.
            written = [await self._commit_batch([pending]) for pending in batch]
            return all(written)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_exception(AuditUnavailableError("the ledger could not be written"))
        return False

    async def _read_state(self, conn: AsyncConnection) -> tuple[bool, tuple[int, str]]:
        registered = bool(
            (await conn.execute(select(exists().where(audit_chains.c.chain_id == self.chain_id)))).scalar()
        )
        last = (
            await conn.execute(
                select(audit_events.c.seq, audit_events.c.hash)
                .where(audit_events.c.chain_id == self.chain_id)
                .order_by(audit_events.c.seq.desc())
                .limit(1)
            )
        ).first()
        return registered, ((int(last.seq), str(last.hash)) if last else (0, GENESIS))

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
        try:
            async with self._engine.begin() as conn:
                await self._checkpoint(conn, seq, head_hash, final=final)
        except Exception:
            log.error("could not write a checkpoint", extra={"chain_id": self.chain_id}, exc_info=True)
            return
        self._checkpointed(seq)

    def _checkpointed(self, seq: int) -> None:
        self._checkpointed_seq = seq
        self._checkpointed_at = time.monotonic()

    async def _checkpoint(
        self, conn: AsyncConnection, seq: int, head_hash: str, *, final: bool = False
    ) -> None:
        assert self._signing is not None
        key = self._signing.active
        signed_at = now_text()
        signature = jws.serialize_compact(
            {"alg": ALGORITHM, "kid": key.kid, "typ": CHECKPOINT_TYPE},
            checkpoint_payload(self.chain_id, seq, head_hash, signed_at, final),
            key,
            algorithms=[ALGORITHM],
        )
        await conn.execute(
            insert(audit_checkpoints).values(
                chain_id=self.chain_id,
                seq=seq,
                final=final,
                head_hash=head_hash,
                signed_at=signed_at,
                key_id=key.kid or "",
                signature=signature,
            )
        )
