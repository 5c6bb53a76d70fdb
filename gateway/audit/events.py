"""The ledger's stored form: an event as a row, its hash, a checkpoint's signed payload, time as text.

The writer builds rows and hashes with these functions and the verifier recomputes them from what it
reads back, so both sides of the tamper evidence share one definition. Times are fixed-width UTC text
(see `gateway.audit.tables`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import String

from gateway.audit.tables import audit_events

GENESIS: Final = "0" * 64
# What a writer makes its chain ids with (uuid4). Anything else in audit_chains was put there by hand,
# and is never used as part of a file name (witness files, lock files).
_CHAIN_ID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CHECKPOINT_TYPE: Final = "audit-checkpoint+jws"
# Every column of audit_events except `hash` is covered by the hash.
# Columns added after events were first written are hashed only when they hold a value, so that
# the events written before them keep their hashes.
_HASHED_WHEN_SET: Final = ("officer_issuer", "request_count")
_NOT_HASHED: Final = ("hash", "recorded_at")  # the hash itself; where the row is kept (tables.py)
HASHED_COLUMNS: Final = tuple(
    str(c.name)  # plain text, not SQLAlchemy's quoted_name: orjson takes only str keys
    for c in audit_events.columns
    if c.name not in _NOT_HASHED and c.name not in _HASHED_WHEN_SET
)
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def is_chain_id(text: str) -> bool:
    """Whether a chain id is one a writer makes (a lower-case uuid4)."""
    return _CHAIN_ID.match(text) is not None


def now_text() -> str:
    """The current UTC time as the fixed-width text the ledger stores (microseconds, 'Z'): what
    strftime(_TIME_FORMAT) writes, in a third of the time (every request stamps its event with it)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" becomes "Z"


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What the request handler knows of one request. Holds identifiers and field names only."""

    endpoint: str
    outcome: str  # allowed | denied | error | disconnected
    http_status: int
    latency_us: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: str = field(default_factory=now_text)
    client_id: str | None = None
    agreement_id: str | None = None
    agreement_version: int | None = None
    purpose: str | None = None
    lawful_basis: tuple[str, ...] = ()
    decision_rule: str | None = None
    acting_user: str | None = None
    officer_issuer: str | None = None  # who verified acting_user; None: asserted by the partner
    case_reference: str | None = None
    break_glass_reason: str | None = None
    operation_name: str | None = None
    document_sha256: str | None = None
    fields_disclosed: tuple[str, ...] = ()
    fields_withheld: tuple[str, ...] = ()
    error_code: str | None = None
    client_address: str | None = None
    trace_id: str | None = None
    token_jti: str | None = None
    request_count: int | None = None  # a summary event: how many refused requests it stands for
    # (internal person id, view fields sent for that person), one entry per person
    disclosures: tuple[tuple[int, tuple[str, ...]], ...] = ()


# Stored text is cut to its column, stripped of control characters and made encodable before it is
# hashed: a value the database would refuse (PostgreSQL rejects NUL and over-long text; SQLite takes
# both) must not fail the group commit it shares with other requests, and a terminal must be able to
# print what is stored.
_LENGTHS: Final = {
    c.name: c.type.length for c in audit_events.columns if isinstance(c.type, String) and c.type.length
}
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _stored(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.isascii() and value.isprintable():
        # Nothing to strip or replace (ASCII's unprintables are exactly _CONTROL): only cut it.
        limit = _LENGTHS.get(name)
        return value[:limit] if limit else value
    clean = _CONTROL.sub("", value)
    limit = _LENGTHS.get(name)
    clean = clean[:limit] if limit else clean
    # A lone surrogate cannot be encoded, hashed or stored: the endpoints refuse such text, and
    # anything that slips past them is stored with '?' in its place rather than failing the batch.
    return clean.encode("utf-8", "replace").decode("utf-8")


def event_row(draft: EventDraft, *, chain_id: str, seq: int, prev_hash: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": draft.id,
        "chain_id": chain_id,
        "seq": seq,
        "prev_hash": prev_hash,
        "occurred_at": draft.occurred_at,
        "endpoint": draft.endpoint,
        "client_id": draft.client_id,
        "agreement_id": draft.agreement_id,
        "agreement_version": draft.agreement_version,
        "purpose": draft.purpose,
        "lawful_basis": "; ".join(draft.lawful_basis) or None,
        "decision_rule": draft.decision_rule,
        "acting_user": draft.acting_user,
        "officer_issuer": draft.officer_issuer,
        "case_reference": draft.case_reference,
        "break_glass_reason": draft.break_glass_reason,
        "operation_name": draft.operation_name,
        "document_sha256": draft.document_sha256,
        "fields_disclosed": ",".join(draft.fields_disclosed),
        "fields_withheld": ",".join(draft.fields_withheld),
        "people_count": len(draft.disclosures),
        "outcome": draft.outcome,
        "error_code": draft.error_code,
        "http_status": draft.http_status,
        "client_address": draft.client_address,
        "latency_us": draft.latency_us,
        "trace_id": draft.trace_id,
        "token_jti": draft.token_jti,
        "request_count": draft.request_count,
    }
    row = {name: _stored(name, value) for name, value in row.items()}
    disclosures = [(person_id, ",".join(fields)) for person_id, fields in draft.disclosures]
    row["hash"] = event_hash(row, disclosures)
    return row


def event_hash(row: Mapping[str, Any], disclosures: list[tuple[int, str]]) -> str:
    """SHA-256 over the event's columns (its predecessor's hash among them) and its disclosures.

    The same function checks a row read back from the database, so it reads exactly what is stored.
    """
    return hashlib.sha256(canonical_event(row, disclosures)).hexdigest()


def canonical_event(row: Mapping[str, Any], disclosures: list[tuple[int, str]]) -> bytes:
    """What an event's hash covers: its hashed columns and its disclosures as JSON, keys sorted, no
    spaces, text as UTF-8 (not escaped). orjson writes exactly what `json.dumps(..., sort_keys=True,
    separators=(",", ":"), ensure_ascii=False).encode()` writes for these values (text, integers,
    null), in a tenth of the time; tests/gateway/audit/test_event_hash.py holds the two to one."""
    return orjson.dumps(
        {
            "event": {
                **{name: row[name] for name in HASHED_COLUMNS},
                **{name: row[name] for name in _HASHED_WHEN_SET if row.get(name) is not None},
            },
            "disclosures": sorted([int(person_id), fields] for person_id, fields in disclosures),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def checkpoint_payload(
    chain_id: str, seq: int, head_hash: str, signed_at: str, final: bool, abandoned: str | None = None
) -> bytes:
    """What a checkpoint signs. `final`: the chain ends here; nothing may follow. `abandoned`: the
    chain was sealed for a writer that died, and why (present only then, so older checkpoints verify)."""
    body: dict[str, Any] = {
        "chain_id": chain_id, "seq": seq, "head_hash": head_hash, "signed_at": signed_at, "final": final,
    }  # fmt: skip
    if abandoned is not None:
        body["abandoned"] = abandoned
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def time_text(moment: datetime) -> str:
    """A datetime as the ledger's fixed-width UTC text; a naive datetime is taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time_text(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def micros_since(started: float) -> int:
    """Microseconds since a `time.perf_counter()` reading: an event's latency."""
    return int((time.perf_counter() - started) * 1_000_000)
