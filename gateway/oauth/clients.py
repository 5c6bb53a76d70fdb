"""The registry of partner systems (OAuth clients), each bound to exactly one agreement.

A client secret is 256 random bits, shown once when the client is added and stored only as its
SHA-256. A slow password hash protects guessable passwords; a secret of this size is not guessable,
so a fast hash loses nothing and keeps the token endpoint cheap.

Exceptions:
    ClientError
      UnknownAgreementError   `clients add` named an agreement that is not loaded
      UnknownClientError      no client with that id
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

_metadata = MetaData()

clients = Table(
    "clients",
    _metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("agreement_id", String(64), nullable=False),
    Column("secret_hash", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

_HASH_PREFIX = "sha256$"


class ClientError(Exception):
    pass


class UnknownAgreementError(ClientError):
    pass


class UnknownClientError(ClientError):
    pass


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str
    agreement_id: str
    secret_hash: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None

    def secret_matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))


@dataclass(frozen=True, slots=True)
class NewClient:
    record: ClientRecord
    secret: str


def hash_secret(secret: str) -> str:
    return _HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


async def add_client(
    conn: AsyncConnection, *, agreement_id: str, known_agreements: set[str], name: str | None = None
) -> NewClient:
    if agreement_id not in known_agreements:
        raise UnknownAgreementError(
            f"no agreement '{agreement_id}' (known: {', '.join(sorted(known_agreements))})"
        )
    client_id = f"{agreement_id}-{secrets.token_hex(6)}"
    secret = secrets.token_urlsafe(32)
    record = ClientRecord(
        client_id=client_id,
        name=name or client_id,
        agreement_id=agreement_id,
        secret_hash=hash_secret(secret),
        created_at=datetime.now(UTC),
        disabled_at=None,
    )
    await conn.execute(
        insert(clients).values(
            client_id=record.client_id,
            name=record.name,
            agreement_id=record.agreement_id,
            secret_hash=record.secret_hash,
            created_at=record.created_at,
        )
    )
    return NewClient(record=record, secret=secret)


async def get_client(conn: AsyncConnection, client_id: str) -> ClientRecord | None:
    row = (await conn.execute(select(clients).where(clients.c.client_id == client_id))).first()
    return None if row is None else ClientRecord(**row._mapping)


async def list_clients(conn: AsyncConnection) -> list[ClientRecord]:
    rows = (await conn.execute(select(clients).order_by(clients.c.agreement_id, clients.c.client_id))).all()
    return [ClientRecord(**row._mapping) for row in rows]


async def disable_client(conn: AsyncConnection, client_id: str) -> ClientRecord:
    # Disabling twice is not an error: the client stays disabled since the first time.
    await conn.execute(
        update(clients)
        .where(clients.c.client_id == client_id, clients.c.disabled_at.is_(None))
        .values(disabled_at=datetime.now(UTC))
    )
    record = await get_client(conn, client_id)
    if record is None:
        raise UnknownClientError(f"no client '{client_id}'")
    return record
