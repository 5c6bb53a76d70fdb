"""Chains and their writers: who holds a chain, whether its writer still lives, signing checkpoints,
and sealing the chain of a writer that died.

A writer that is killed (kill -9, a lost host) leaves its chain open: no final checkpoint, and an
unsigned tail that `audit verify --strict` refuses for ever. `seal_abandoned` closes such a chain
with a signed final checkpoint marked `abandoned` (why, and by whom) at the last event present, so
the verifier passes again and still shows that the writer died, and where. The gateway seals the
chains of dead writers when it starts (`seal_orphans`); `gateway audit close-chain` seals one by hand.

Sealing a chain whose writer is alive would make that writer's next event a forgery in the
verifier's eyes, so a chain is sealed only when its writer is known to be gone:

- PostgreSQL: every writer holds a session advisory lock on its chain, on the very connection it
  writes the chain through; the lock goes when the writer's session ends (its process died and the
  socket closed, or the server dropped it). A sealer that can take the lock knows the writer is gone,
  and holds the lock while it seals. A writer that lost its connection takes the lock again and reads
  its chain's state before writing; if it was sealed meanwhile, it starts a new chain.
- SQLite (one host, embedded): every writer holds an flock on a lock file of its chain beside the
  database (`<database>.chains/<chain_id>.lock`), which the kernel releases when the process dies,
  whatever its pid namespace or host name. A sealer that can take it knows the writer is gone. With
  no lock file (a database copied from elsewhere, or written by an older gateway) the registered
  host and pid are looked up instead; on another host that is unknown: never sealed automatically.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from joserfc import jws
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.errors import ChainClosedError, ChainStillWritingError, UnknownChainError
from gateway.audit.events import (
    CHECKPOINT_TYPE,
    GENESIS,
    checkpoint_payload,
    is_chain_id,
    now_text,
    parse_time_text,
)
from gateway.audit.tables import audit_chains, audit_checkpoints, audit_events
from gateway.audit.witness import Witness
from gateway.keys import ALGORITHM, SigningKeys

log = logging.getLogger("gateway.ledger")

MAX_REASON: Final = 500


class Liveness(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


def lock_key(chain_id: str) -> int:
    """The chain's PostgreSQL advisory lock key: 64 bits of SHA-256, as a signed bigint."""
    return int.from_bytes(
        hashlib.sha256(b"audit-chain:" + chain_id.encode()).digest()[:8], "big", signed=True
    )


async def take_lock(conn: AsyncConnection, chain_id: str) -> bool:
    """Take the chain's writer lock for this connection's session; False if another session has it.
    Always True on SQLite, where liveness is judged by process instead."""
    if conn.dialect.name != "postgresql":
        return True
    taken = await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": lock_key(chain_id)})
    await conn.commit()
    return bool(taken.scalar())


async def release_lock(conn: AsyncConnection, chain_id: str) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(chain_id)})
        await conn.commit()


def sign_checkpoint(
    signing: SigningKeys,
    chain_id: str,
    seq: int,
    head_hash: str,
    *,
    final: bool,
    abandoned: str | None = None,
) -> dict[str, Any]:
    """The audit_checkpoints row for a signed chain head."""
    key = signing.active
    signed_at = now_text()
    signature = jws.serialize_compact(
        {"alg": ALGORITHM, "kid": key.kid, "typ": CHECKPOINT_TYPE},
        checkpoint_payload(chain_id, seq, head_hash, signed_at, final, abandoned),
        key,
        algorithms=[ALGORITHM],
    )
    return {
        "chain_id": chain_id, "seq": seq, "final": final, "head_hash": head_hash, "signed_at": signed_at,
        "key_id": key.kid or "", "signature": signature, "abandoned": abandoned,
    }  # fmt: skip


@dataclass(frozen=True)
class SealedChain:
    chain_id: str
    seq: int  # the last event present, where the chain now ends
    reason: str


async def open_chains(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Registered chains that no final checkpoint has closed."""
    closed = select(audit_checkpoints.c.chain_id).where(audit_checkpoints.c.final.is_(True))
    rows = await conn.execute(select(audit_chains).where(audit_chains.c.chain_id.not_in(closed)))
    return [dict(row._mapping) for row in rows]


def lock_directory(engine: AsyncEngine) -> Path | None:
    """Where a SQLite database's chain lock files live; None for PostgreSQL, memory and read-only URIs."""
    database = engine.url.database
    if (
        engine.dialect.name != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        return None
    # The file itself, not the name it was reached by: a symlink or a relative path must find the same locks.
    return Path(f"{Path(database).resolve()}.chains")


def hold_file_lock(directory: Path, chain_id: str) -> int | None:
    """Take the chain's lock file (an flock held until released or the process ends); None if another
    process holds it."""
    if not is_chain_id(chain_id):
        raise ValueError("not a chain id a writer makes")  # never part of a path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / f"{chain_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_file_lock(directory: Path, chain_id: str, fd: int) -> None:
    if is_chain_id(chain_id):
        with contextlib.suppress(FileNotFoundError):
            (directory / f"{chain_id}.lock").unlink()
    os.close(fd)  # closing releases the flock


def _sqlite_liveness(engine: AsyncEngine, chain: dict[str, Any]) -> tuple[Liveness, int | None]:
    """The writer's liveness, and the lock file's descriptor if the sealer now holds it."""
    directory = lock_directory(engine)
    known = is_chain_id(chain["chain_id"])
    if directory is not None and known and (directory / f"{chain['chain_id']}.lock").exists():
        fd = hold_file_lock(directory, chain["chain_id"])
        return (Liveness.ALIVE, None) if fd is None else (Liveness.DEAD, fd)
    return process_liveness(chain), None


def process_liveness(chain: dict[str, Any]) -> Liveness:
    """Whether the process that registered a chain is still running (SQLite's judge of a writer)."""
    if chain["host"] != socket.gethostname()[:255]:
        return Liveness.UNKNOWN
    pid = int(chain["process_id"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Liveness.DEAD
    except PermissionError:
        pass  # it exists, under another user
    started = _process_started(pid)
    if started is not None and started > parse_time_text(chain["started_at"]) + timedelta(seconds=5):
        return Liveness.DEAD  # the pid now belongs to a process younger than the chain
    return Liveness.ALIVE


def _process_started(pid: int) -> datetime | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
    return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)


async def seal_abandoned(
    engine: AsyncEngine,
    chain_id: str,
    *,
    signing: SigningKeys,
    reason: str,
    witness: Witness | None = None,
    require_dead: bool = True,
) -> SealedChain:
    """Close a chain whose writer is gone at its last event, with a signed `abandoned` checkpoint.

    `require_dead`: refuse unless the writer is known to be gone (start-up); otherwise refuse only when
    it is known to be alive (an operator's `close-chain`, who has checked and says why)."""
    reason = " ".join(reason.split())[:MAX_REASON] or "sealed"
    async with engine.connect() as conn:
        chain = (await conn.execute(select(audit_chains).where(audit_chains.c.chain_id == chain_id))).first()
        await conn.commit()
        if chain is None:
            raise UnknownChainError(f"no chain {chain_id} in the ledger")
        if not await take_lock(conn, chain_id):
            raise ChainStillWritingError(
                f"chain {chain_id}'s writer is still running: it closes its own chain"
            )
        liveness, file_lock = Liveness.DEAD, None
        if conn.dialect.name != "postgresql":
            liveness, file_lock = _sqlite_liveness(engine, dict(chain._mapping))
        try:
            async with conn.begin():
                final = await conn.execute(
                    select(audit_checkpoints.c.seq).where(
                        audit_checkpoints.c.chain_id == chain_id, audit_checkpoints.c.final.is_(True)
                    )
                )
                if final.first() is not None:
                    raise ChainClosedError(f"chain {chain_id} is already closed")
                _require_gone(dict(chain._mapping), liveness, require_dead=require_dead)
                last = (
                    await conn.execute(
                        select(audit_events.c.seq, audit_events.c.hash)
                        .where(audit_events.c.chain_id == chain_id)
                        .order_by(audit_events.c.seq.desc())
                        .limit(1)
                    )
                ).first()
                seq, head_hash = (int(last.seq), str(last.hash)) if last else (0, GENESIS)
                row = sign_checkpoint(signing, chain_id, seq, head_hash, final=True, abandoned=reason)
                await conn.execute(insert(audit_checkpoints).values(**row))
        finally:
            await release_lock(conn, chain_id)
            directory = lock_directory(engine)
            if file_lock is not None and directory is not None:
                release_file_lock(directory, chain_id, file_lock)
    if witness is not None:
        witness.checkpoint(chain_id, row["signature"])
    log.warning("sealed an abandoned audit chain", extra={"chain_id": chain_id, "seq": seq})
    return SealedChain(chain_id, seq, reason)


def _require_gone(chain: dict[str, Any], liveness: Liveness, *, require_dead: bool) -> None:
    where = f"pid {chain['process_id']} on {chain['host']}"
    if liveness is Liveness.ALIVE:
        raise ChainStillWritingError(f"chain {chain['chain_id']}'s writer ({where}) is still running")
    if require_dead and liveness is Liveness.UNKNOWN:
        raise ChainStillWritingError(
            f"chain {chain['chain_id']}'s writer ({where}) may still be running there"
        )


async def seal_orphans(
    engine: AsyncEngine, *, signing: SigningKeys, witness: Witness | None, sealer: str
) -> list[SealedChain]:
    """Seal every open chain whose writer is known to be gone; leave the others alone."""
    async with engine.connect() as conn:
        candidates = await open_chains(conn)
    sealed = []
    for chain in candidates:
        if not is_chain_id(chain["chain_id"]):
            # No writer makes such an id: someone put it there. Never sealed (which would sign it).
            log.warning("an open chain with an id no writer makes is left alone")
            continue
        writer = f"writer {chain['writer']} (pid {chain['process_id']} on {chain['host']})"
        reason = f"{writer} died; sealed by {sealer}"
        try:
            sealed.append(
                await seal_abandoned(
                    engine, chain["chain_id"], signing=signing, reason=reason, witness=witness
                )
            )
        except (ChainStillWritingError, ChainClosedError):
            continue  # alive after all, or closed by another process starting at the same time
    return sealed
