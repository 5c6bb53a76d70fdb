"""The witness: the ledger's evidence kept outside the database it protects.

A DBA can delete a chain's newest events together with the checkpoints that signed them, or a whole
chain with its registration: the database alone would then look intact. So every writer also
appends, to an append-only sink on other storage, a signed copy of:

- each chain's registration (`chain`): the chain exists, who writes it, since when;
- each checkpoint (`checkpoint`): the very JWS stored in the database;
- a periodic ledger-wide head (`head`): every chain registered and its latest signed position, as
  this writer saw them, so that a chain whose own writer's witness was lost is still covered.

`gateway audit verify --witness PATH` reads those records back and holds the database to them
(`verify_witness`): a witnessed chain that is gone, a witnessed checkpoint that is missing or differs
(re-signed), a removed final checkpoint, a record that no longer verifies with the keys given (the
signing key was replaced). The witness is at most one checkpoint interval behind the database.

Sinks: a directory, one file per chain (`<dir>/<chain_id>.jsonl`, opened O_APPEND and fsynced; on
other storage in production: a separate volume, a mount of an object store with a retention lock,
a host path a log shipper forwards), or syslog over TCP (RFC 5424 with RFC 6587 octet counting).
Each record is one line of JSON; lines collected by syslog may carry a prefix before the JSON.
A sink that fails is retried at the next record; the failure is logged and counted, and requests go
on being answered: the ledger in the database is the record, the witness its safeguard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.errors import WitnessError
from gateway.audit.events import GENESIS, is_chain_id, now_text
from gateway.audit.tables import audit_chains, audit_checkpoints
from gateway.config import WitnessTarget
from gateway.keys import ALGORITHM, SigningKeys

log = logging.getLogger("gateway.ledger")

WITNESS_TYPE: Final = "audit-witness+jws"
_MAX_BACKLOG: Final = 10_000  # records kept for retry while a sink is down
_STUCK_AFTER: Final = 30.0  # seconds one append may take before the sink counts as hung
_HEAD_CHAINS: Final = 40  # chains per head record: about 5 KB, inside syslog's usual 8 KB


class WitnessSink(Protocol):
    def append(self, chain_id: str, lines: Sequence[str]) -> None:
        """Make the lines durable, in order; OSError to try again later, ValueError never to."""


class FileWitness:
    """One append-only file per chain in a directory (created 0700; files 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, chain_id: str, lines: Sequence[str]) -> None:
        if not is_chain_id(chain_id):  # a chain id from the database never names a path of its own
            raise ValueError("not a chain id a writer makes")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{chain_id}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, "".join(line + "\n" for line in lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class SyslogWitness:
    """Syslog over TCP: RFC 5424 messages, octet-counted (RFC 6587) so that a long head is one record."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    def append(self, chain_id: str, lines: Sequence[str]) -> None:
        hostname = socket.gethostname()[:255] or "-"
        frames = []
        for line in lines:
            # <110> = facility 13 (log audit), severity 6 (informational)
            message = f"<110>1 {now_text()} {hostname} partner-gateway {os.getpid()} audit-witness - {line}"
            body = message.encode()
            frames.append(f"{len(body)} ".encode() + body)
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as connection:
            connection.sendall(b"".join(frames))


def witness_sink(target: WitnessTarget | None) -> WitnessSink | None:
    if target is None:
        return None
    if target.syslog is not None:
        return SyslogWitness(*target.syslog)
    assert target.directory is not None
    return FileWitness(target.directory)


def witness_for(
    target: WitnessTarget | None, signing: SigningKeys, *, on_failure: Callable[[], None] | None = None
) -> Witness | None:
    sink = witness_sink(target)
    return None if sink is None else Witness(sink, signing, on_failure=on_failure)


def _sign(signing: SigningKeys, payload: dict[str, Any]) -> str:
    key = signing.active
    return jws.serialize_compact(
        {"alg": ALGORITHM, "kid": key.kid, "typ": WITNESS_TYPE},
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode(),
        key,
        algorithms=[ALGORITHM],
    )


def _line(kind: str, token: str) -> str:
    return json.dumps({"witness": kind, "jws": token}, separators=(",", ":"))


class Witness:
    """A writer's witness: signs records and hands them to a thread of its own that appends them.

    Nothing here waits for the sink: a sink that hangs (a stuck network mount) or fails stops neither
    the ledger nor the requests waiting on it. Records stay queued, in order, and are retried until
    written; past `max_backlog` the oldest are dropped, counted and logged. The thread is a daemon,
    so a hung sink cannot hold the process at exit either; `flush` waits a bounded time.
    """

    def __init__(
        self,
        sink: WitnessSink,
        signing: SigningKeys,
        *,
        on_failure: Callable[[], None] | None = None,
        max_backlog: int = _MAX_BACKLOG,
        retry_seconds: float = 5.0,
        stuck_after: float = _STUCK_AFTER,
    ) -> None:
        self.sink = sink
        self.signing = signing
        self._on_failure = on_failure
        self._max_backlog = max_backlog
        self._retry_seconds = retry_seconds
        self._stuck_after = stuck_after
        self._queue: deque[tuple[str, str]] = deque()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False  # the thread holds records it has not written yet
        self._busy_since = 0.0
        self._stuck_said = 0.0
        self._stopping = False

    def chain(self, *, chain_id: str, started_at: str, host: str, process_id: int, writer: str) -> None:
        payload = {
            "kind": "chain", "chain_id": chain_id, "started_at": started_at, "host": host,
            "process_id": process_id, "writer": writer,
        }  # fmt: skip
        self._submit(chain_id, [_line("chain", _sign(self.signing, payload))])

    def checkpoint(self, chain_id: str, signature: str) -> None:
        self._submit(chain_id, [_line("checkpoint", signature)])

    def head(self, chain_id: str, positions: dict[str, tuple[int, str]]) -> None:
        """Chains' positions, a few dozen to a record, so that each stays small enough for syslog."""
        ordered = sorted(positions.items())
        signed_at = now_text()
        lines = []
        for start in range(0, len(ordered), _HEAD_CHAINS):
            chunk = ordered[start : start + _HEAD_CHAINS]
            payload = {
                "kind": "head", "signed_at": signed_at, "by": chain_id,
                "chains": {chain: [seq, head_hash] for chain, (seq, head_hash) in chunk},
            }  # fmt: skip
            lines.append(_line("head", _sign(self.signing, payload)))
        self._submit(chain_id, lines)

    async def flush(self, within: float = 5.0) -> bool:
        """Wait up to `within` seconds for every record to be written; False if some are not."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self._condition:
                if not self._queue and not self._busy:
                    return True
            await asyncio.sleep(0.02)
        log.error("the audit witness is behind: records are still queued", extra={"queued": len(self._queue)})
        return False

    def _submit(self, chain_id: str, lines: list[str]) -> None:
        self._say_if_stuck()
        with self._condition:
            self._queue.extend((chain_id, line) for line in lines)
            dropped = max(0, len(self._queue) - self._max_backlog)
            for _ in range(dropped):
                self._queue.popleft()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-witness", daemon=True)
                self._thread.start()
            self._condition.notify()
        if dropped:
            log.error("the audit witness dropped its oldest records", extra={"dropped": dropped})

    def _say_if_stuck(self) -> None:
        """A sink that hangs raises no error: say so when the thread has been at one append too long."""
        now = time.monotonic()
        if (
            self._busy
            and now - self._busy_since > self._stuck_after
            and now - self._stuck_said > self._stuck_after
        ):
            self._stuck_said = now
            log.error(
                "the audit witness has been writing one batch for too long",
                extra={"seconds": round(now - self._busy_since)},
            )
            if self._on_failure:
                self._on_failure()

    def stop(self) -> None:
        """Let the thread end once it has no more to do (records not yet written are dropped)."""
        with self._condition:
            self._stopping = True
            self._queue.clear()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                taken = list(self._queue)
                self._busy, self._busy_since = True, time.monotonic()
            by_chain: dict[str, list[str]] = {}
            for owner, line in taken:
                by_chain.setdefault(owner, []).append(line)
            done: set[tuple[str, str]] = set()
            failed = False
            for owner, lines in by_chain.items():
                try:
                    self.sink.append(owner, lines)
                except ValueError:
                    # Never writable (a chain id no writer makes): dropped, not retried for ever.
                    log.error("the audit witness refused a record that names no real chain")
                except OSError:
                    log.error("the audit witness could not be written", exc_info=True)
                    if self._on_failure:
                        self._on_failure()
                    failed = True
                    break  # the rest waits, in order, for the next attempt
                done.update((owner, line) for line in lines)
            with self._condition:
                self._queue = deque(item for item in self._queue if item not in done)
                self._busy = False
                if failed and not self._stopping:
                    self._condition.wait(timeout=self._retry_seconds)


async def chain_positions(conn: AsyncConnection) -> dict[str, tuple[int, str, bool]]:
    """Every chain registered: its latest signed checkpoint ((0, GENESIS) before its first), and
    whether that checkpoint closed it."""
    latest = (
        select(audit_checkpoints.c.chain_id, func.max(audit_checkpoints.c.seq).label("seq"))
        .group_by(audit_checkpoints.c.chain_id)
        .subquery()
    )
    rows = await conn.execute(
        select(
            audit_chains.c.chain_id, latest.c.seq, audit_checkpoints.c.head_hash, audit_checkpoints.c.final
        ).select_from(
            audit_chains.outerjoin(latest, latest.c.chain_id == audit_chains.c.chain_id).outerjoin(
                audit_checkpoints,
                and_(
                    audit_checkpoints.c.chain_id == latest.c.chain_id, audit_checkpoints.c.seq == latest.c.seq
                ),
            )
        )
    )
    positions: dict[str, tuple[int, str, bool]] = {}
    for row in rows:
        if row.seq is None:
            positions[row.chain_id] = (0, GENESIS, False)
        else:
            closed = bool(row.final) or positions.get(row.chain_id, (0, "", False))[2]
            positions[row.chain_id] = (int(row.seq), str(row.head_hash), closed)
    return positions


# -- reading a witness back, and holding the database to it --------------------------------------


@dataclass(frozen=True)
class WitnessRecord:
    kind: str  # chain | checkpoint | head
    payload: dict[str, Any]
    token: str
    where: str  # file:line, for the report


@dataclass
class WitnessReport:
    files: int = 0
    records: int = 0
    chains: set[str] = field(default_factory=set)  # chains whose registration the witness holds
    problems: list[str] = field(default_factory=list)
    # Chains in the database whose registration the witness does not hold: written before the witness
    # was configured, by a process whose witness was not given, or inserted by someone else entirely.
    unwitnessed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def witness_files(paths: Iterable[Path]) -> list[Path]:
    """The given files, and the *.jsonl and *.log files of the given directories."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in {".jsonl", ".log"} and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise WitnessError(f"no witness at {path}")
    return files


def read_witness_file(file: Path, report: WitnessReport) -> list[WitnessRecord]:
    """One file's records. A line that cannot be read is a problem: someone may have edited it."""
    report.files += 1
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise WitnessError(f"cannot read the witness file {file} ({type(error).__name__})") from None
    records = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{file}:{number}"
        record = _record(raw, where)
        if record is None:
            report.problems.append(f"{where}: not a witness record (the witness was edited, or is not one)")
        else:
            records.append(record)
    report.records += len(records)
    return records


def read_witness(paths: Iterable[Path]) -> tuple[list[WitnessRecord], WitnessReport]:
    """Every record of the witness at once (for a look at it; `verify_witness` reads file by file)."""
    report = WitnessReport()
    records = [record for file in witness_files(paths) for record in read_witness_file(file, report)]
    return records, report


def _record(raw: str, where: str) -> WitnessRecord | None:
    start = raw.find("{")
    try:
        line = json.loads(raw[start:]) if start >= 0 else {}
        token = line["jws"]
        kind = line["witness"]
        payload = json.loads(jws.extract_compact(token.encode()).payload)
    except (ValueError, KeyError, TypeError, JoseError):
        return None
    if kind not in {"chain", "checkpoint", "head"} or not isinstance(payload, dict):
        return None
    return WitnessRecord(kind, payload, token, where)


async def verify_witness(engine: AsyncEngine, keys: KeySet, paths: Iterable[Path]) -> WitnessReport:
    """Hold the database to the witness, one file at a time: only the chains a file names are read from
    the database for it, so memory follows the largest file, not the ledger's age."""
    report = WitnessReport()
    files = witness_files(paths)
    async with engine.connect() as conn:
        chains = {row.chain_id: dict(row._mapping) for row in await conn.execute(select(audit_chains))}
        for file in files:
            records = read_witness_file(file, report)
            named = {str(r.payload.get("chain_id")) for r in records if r.kind != "head"}
            named |= {chain for r in records if r.kind == "head" for chain in _listed(r)}
            checkpoints = await _checkpoints_of(conn, sorted(named))
            heads = {(chain_id, seq): head_hash for (chain_id, seq, _), (_, head_hash) in checkpoints.items()}
            signatures = {key: signature for key, (signature, _) in checkpoints.items()}
            for record in records:
                if not _verifies(record.token, keys):
                    report.problems.append(
                        f"{record.where}: a witnessed {record.kind} does not verify with the keys given "
                        "(the signing key was replaced, or pass the retired key's archived JWKS with --jwks)"
                    )
                    continue
                check = {"chain": _check_chain, "checkpoint": _check_checkpoint, "head": _check_head}[
                    record.kind
                ]
                check(record, chains, signatures, heads, report)
    report.unwitnessed = sorted(set(chains) - report.chains)
    return report


async def _checkpoints_of(
    conn: AsyncConnection, chain_ids: list[str]
) -> dict[tuple[str, int, bool], tuple[str, str]]:
    """(chain, seq, final) -> (signature, head hash), for the chains named."""
    found: dict[tuple[str, int, bool], tuple[str, str]] = {}
    for start in range(0, len(chain_ids), 500):
        rows = await conn.execute(
            select(
                audit_checkpoints.c.chain_id,
                audit_checkpoints.c.seq,
                audit_checkpoints.c.final,
                audit_checkpoints.c.signature,
                audit_checkpoints.c.head_hash,
            ).where(audit_checkpoints.c.chain_id.in_(chain_ids[start : start + 500]))
        )
        for row in rows:
            found[(row.chain_id, int(row.seq), bool(row.final))] = (row.signature, str(row.head_hash))
    return found


def _listed(record: WitnessRecord) -> dict[str, Any]:
    chains = record.payload.get("chains")
    return chains if isinstance(chains, dict) else {}


def _verifies(token: str, keys: KeySet) -> bool:
    try:
        jws.deserialize_compact(token, keys, algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return False
    return True


def _check_chain(
    record: WitnessRecord,
    chains: dict[str, dict[str, Any]],
    checkpoints: dict[tuple[str, int, bool], str],
    heads: dict[tuple[str, int], str],
    report: WitnessReport,
) -> None:
    chain_id = str(record.payload.get("chain_id"))
    stored = chains.get(chain_id)
    if stored is None:
        report.problems.append(
            f"{record.where}: chain {chain_id}, registered {record.payload.get('started_at')} by "
            f"{record.payload.get('host')} (pid {record.payload.get('process_id')}), is not in the database "
            "(deleted with its events)"
        )
        return
    for name in ("started_at", "host", "process_id", "writer"):
        if stored[name] != record.payload.get(name):
            report.problems.append(f"{record.where}: chain {chain_id}'s registration was altered ({name})")
            return
    report.chains.add(chain_id)


def _check_checkpoint(
    record: WitnessRecord,
    chains: dict[str, dict[str, Any]],
    checkpoints: dict[tuple[str, int, bool], str],
    heads: dict[tuple[str, int], str],
    report: WitnessReport,
) -> None:
    payload = record.payload
    if not isinstance(payload.get("seq"), int):
        report.problems.append(f"{record.where}: a checkpoint without a position")
        return
    chain_id, seq, final = str(payload.get("chain_id")), int(payload["seq"]), bool(payload.get("final"))
    stored = checkpoints.get((chain_id, seq, final))
    what = "final checkpoint" if final else "checkpoint"
    if chain_id not in chains:
        report.problems.append(
            f"{record.where}: chain {chain_id}, signed up to event {seq}, is not in the database (deleted)"
        )
    elif stored is None:
        consequence = (
            "the chain was reopened or its end forged" if final else "its events were deleted with it"
        )
        report.problems.append(
            f"{record.where}: the {what} of chain {chain_id} at event {seq} was removed from the database "
            f"({consequence})"
        )
    elif stored != record.token:
        report.problems.append(
            f"{record.where}: the {what} of chain {chain_id} at event {seq} differs from the one witnessed "
            "(re-signed or replaced)"
        )


def _check_head(
    record: WitnessRecord,
    chains: dict[str, dict[str, Any]],
    checkpoints: dict[tuple[str, int, bool], str],
    heads: dict[tuple[str, int], str],
    report: WitnessReport,
) -> None:
    listed = record.payload.get("chains")
    if not isinstance(listed, dict):
        report.problems.append(f"{record.where}: a ledger head without its chains")
        return
    for chain_id, position in sorted(listed.items()):
        if not (isinstance(position, list) and len(position) == 2 and isinstance(position[0], int)):
            report.problems.append(f"{record.where}: a ledger head with a malformed position")
            return
        seq, head_hash = position[0], str(position[1])
        if chain_id not in chains:
            report.problems.append(
                f"{record.where}: the ledger head signed {record.payload.get('signed_at')} lists chain "
                f"{chain_id}, which is not in the database (deleted)"
            )
        elif seq > 0 and heads.get((chain_id, seq)) != head_hash:
            report.problems.append(
                f"{record.where}: the ledger head signed {record.payload.get('signed_at')} has chain "
                f"{chain_id} signed up to event {seq}; the database has no such checkpoint "
                "(truncated or replaced)"
            )
