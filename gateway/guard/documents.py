"""Trusted documents: the GraphQL documents a client may run, registered ahead and sent by hash.

`gateway documents add --client ID FILE.graphql` validates a document against that client's view
(every rule and limit a request would meet) and registers it under the SHA-256 of its text. A
request names a registered document by `documentId` ("sha256:<hex>", the GraphQL-over-HTTP trusted
documents convention) or `extensions.persistedQuery.sha256Hash` (Apollo's), with or without the
text; or sends the text alone, which runs only if its hash is registered for that client.
Where the agreement says `documents: trusted`, nothing else runs. Elsewhere a registered document may
still be sent by hash, and any document by text.

Each process keeps what it has looked up for CACHE_SECONDS: a removal reaches every process within
that time.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    parse,
    specified_rules,
    validate,
)
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.guard.tables import trusted_documents
from schema import View
from schema.limits import people_cost

CACHE_SECONDS: Final = 5.0
MAX_DOCUMENT_CHARS: Final = 20_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DocumentError(Exception):
    """A document cannot be registered (its text says why), or a request names it wrongly."""


@dataclass(frozen=True, slots=True)
class TrustedDocument:
    client_id: str
    sha256: str
    document: str
    operation_names: tuple[str, ...]
    added_at: datetime
    added_by: str


def document_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def requested_hash(payload: Mapping[str, Any]) -> str | None:
    """The hash a request names, from `documentId` or `extensions.persistedQuery`; None if neither.
    Raises DocumentError for a malformed one, or two that differ."""
    named: list[str] = []
    document_id = payload.get("documentId")
    if document_id is not None:
        if not isinstance(document_id, str):
            raise DocumentError("'documentId' must be a string: sha256:<64 hex digits>")
        named.append(document_id.removeprefix("sha256:"))
    extensions = payload.get("extensions")
    if extensions is not None:
        if not isinstance(extensions, dict):
            raise DocumentError("'extensions' must be a JSON object")
        persisted = extensions.get("persistedQuery")
        if persisted is not None:
            if not isinstance(persisted, dict) or persisted.get("version", 1) != 1:
                raise DocumentError("'extensions.persistedQuery' must be {version: 1, sha256Hash}")
            value = persisted.get("sha256Hash")
            if not isinstance(value, str):
                raise DocumentError("'extensions.persistedQuery.sha256Hash' must be a string")
            named.append(value)
    for value in named:
        if not _SHA256.match(value):
            raise DocumentError("a document is named by the SHA-256 of its text: 64 lower-case hex digits")
    if len(set(named)) > 1:
        raise DocumentError("'documentId' and 'extensions.persistedQuery' name different documents")
    return named[0] if named else None


def check_against_view(text: str, view: View, *, max_tokens: int) -> tuple[str, ...]:
    """The operation names of a document that the view would run; DocumentError if it would not."""
    if not text.strip():
        raise DocumentError("the document is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentError(f"the document is longer than {MAX_DOCUMENT_CHARS} characters")
    try:
        document = parse(text, max_tokens=max_tokens)
    except GraphQLError as error:
        raise DocumentError(f"not a GraphQL document: {_location(error)}") from None
    errors = validate(view.schema._schema, document, [*specified_rules, *view.rules])
    if errors:
        raise DocumentError(f"not valid in the {view.agreement.id} view: {errors[0].message}")
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if any(operation.operation.value not in ("query", "mutation") for operation in operations):
        raise DocumentError("only queries and mutations may be registered")
    if view.cost is not None:
        # Page sizes given as variables count at their defaults here, and again as sent, per request.
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        for operation in operations:
            cost = people_cost(operation, fragments, None, pages=view.cost.pages)
            if cost > view.cost.maximum:
                raise DocumentError(
                    f"not valid in the {view.agreement.id} view: a document may ask for at most "
                    f"{view.cost.maximum} people (this one {cost})"
                )
    names = [operation.name.value if operation.name else "" for operation in operations]
    if len(operations) > 1 and "" in names:
        raise DocumentError("a document with several operations must name each of them")
    return tuple(names)


def _location(error: GraphQLError) -> str:
    # The message of a syntax error quotes the document: only its position is repeated here.
    where = error.locations[0] if error.locations else None
    return f"syntax error at line {where.line}, column {where.column}" if where else "syntax error"


async def add_document(
    conn: AsyncConnection, *, client_id: str, text: str, view: View, added_by: str, max_tokens: int
) -> tuple[TrustedDocument, bool]:
    """Register `text` for the client; returns it and whether it was new (adding twice is harmless)."""
    names = check_against_view(text, view, max_tokens=max_tokens)
    sha = document_hash(text)
    row = {
        "client_id": client_id,
        "sha256": sha,
        "document": text,
        "operation_names": ",".join(names),
        "added_at": datetime.now(UTC),
        "added_by": added_by[:200],
    }
    upsert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = await conn.execute(upsert(trusted_documents).values(row).on_conflict_do_nothing())
    stored = await _get(conn, client_id, sha)
    assert stored is not None
    return stored, result.rowcount == 1


async def list_documents(conn: AsyncConnection, client_id: str | None = None) -> list[TrustedDocument]:
    stmt = select(trusted_documents).order_by(trusted_documents.c.client_id, trusted_documents.c.added_at)
    if client_id is not None:
        stmt = stmt.where(trusted_documents.c.client_id == client_id)
    return [_record(row._mapping) for row in (await conn.execute(stmt)).all()]


async def remove_document(conn: AsyncConnection, *, client_id: str, sha256: str) -> bool:
    result = await conn.execute(
        delete(trusted_documents).where(
            trusted_documents.c.client_id == client_id, trusted_documents.c.sha256 == sha256
        )
    )
    return result.rowcount == 1


async def _get(conn: AsyncConnection, client_id: str, sha: str) -> TrustedDocument | None:
    row = (
        await conn.execute(
            select(trusted_documents).where(
                trusted_documents.c.client_id == client_id, trusted_documents.c.sha256 == sha
            )
        )
    ).first()
    return None if row is None else _record(row._mapping)


def _record(row: Any) -> TrustedDocument:
    names = row["operation_names"]
    return TrustedDocument(
        client_id=row["client_id"],
        sha256=row["sha256"],
        document=row["document"],
        operation_names=tuple(names.split(",")) if names else (),
        added_at=row["added_at"],
        added_by=row["added_by"],
    )


class DocumentRegistry:
    """Looks up a client's registered documents, remembering each answer for CACHE_SECONDS."""

    def __init__(self, engine: AsyncEngine, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._seen: dict[tuple[str, str], tuple[float, str | None]] = {}

    async def text(self, client_id: str, sha: str) -> str | None:
        """The registered document's text, or None if the client has none by that hash."""
        key = (client_id, sha)
        now = time.monotonic()
        cached = self._seen.get(key)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        async with self._engine.connect() as conn:
            found = await _get(conn, client_id, sha)
        text = found.document if found is not None else None
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (now, text)
        return text
