"""The registry of partner systems (OAuth clients), each bound to exactly one agreement.

A client proves itself with its own keys (`private_key_jwt`, RFC 7523): the registry holds the
public half of each, by `kid`, and the partner keeps the private half. Where the agreement allows a
shared secret (development only), the secret is 256 random bits, shown once when the client is added
and stored only as its SHA-256: a slow password hash protects guessable passwords; a secret of this
size is not guessable, so a fast hash loses nothing and keeps the token endpoint cheap.

Exceptions:
    ClientError
      UnknownAgreementError   `clients add` named an agreement that is not loaded
      UnknownClientError      no client with that id
      ClientKeysError         a key set that cannot authenticate a client (private parts, no kid, ...)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

_metadata = MetaData()

clients = Table(
    "clients",
    _metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("agreement_id", String(64), nullable=False),
    Column("secret_hash", String(100), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("jwks", Text, nullable=True),  # the client's public keys (a JWK set), for private_key_jwt
)

_HASH_PREFIX = "sha256$"
# What a partner's key may be: algorithms FAPI 2.0 allows, nothing symmetric.
CLIENT_ALGORITHMS: Final = ("ES256", "PS256")
_KEY_TYPES: Final = {"EC": "ES256", "RSA": "PS256"}
MAX_CLIENT_KEYS: Final = 10


class ClientError(Exception):
    pass


class UnknownAgreementError(ClientError):
    pass


class UnknownClientError(ClientError):
    pass


class ClientKeysError(ClientError):
    pass


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str
    agreement_id: str
    secret_hash: str | None
    created_at: datetime
    disabled_at: datetime | None
    jwks: str | None

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None

    def secret_matches(self, secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(self.secret_hash, hash_secret(secret))

    def public_keys(self) -> KeySet | None:
        return None if self.jwks is None else KeySet.import_key_set(json.loads(self.jwks))


@dataclass(frozen=True, slots=True)
class NewClient:
    record: ClientRecord
    secret: str | None  # shown once, for a client that authenticates with a secret


def hash_secret(secret: str) -> str:
    return _HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def checked_jwks(jwks: Any) -> str:
    """A partner's public key set as stored: public keys only, each with a unique `kid` and an
    algorithm a client may sign with. ClientKeysError says what is wrong."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientKeysError('the key set must be a JWK set: {"keys": [...]} with at least one key')
    if len(jwks["keys"]) > MAX_CLIENT_KEYS:
        raise ClientKeysError(f"at most {MAX_CLIENT_KEYS} keys")
    kept, kids = [], set()
    for key in jwks["keys"]:
        if not isinstance(key, dict):
            raise ClientKeysError("every key must be a JWK object")
        if any(part in key for part in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ClientKeysError("a private or symmetric key: register the public half only")
        kid = key.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= 100 or kid in kids:
            raise ClientKeysError("every key needs its own kid (1 to 100 characters)")
        algorithm = _KEY_TYPES.get(str(key.get("kty")))
        if algorithm is None or key.get("alg", algorithm) != algorithm:
            raise ClientKeysError(f"key {kid}: use EC P-256 (ES256) or RSA (PS256)")
        if key.get("kty") == "EC" and key.get("crv") != "P-256":
            raise ClientKeysError(f"key {kid}: an EC key must be on P-256")
        try:
            imported = KeySet.import_key_set({"keys": [key]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError):
            raise ClientKeysError(f"key {kid}: not a valid public key") from None
        if key.get("kty") == "RSA" and getattr(imported.raw_value, "key_size", 0) < 2048:
            raise ClientKeysError(f"key {kid}: an RSA key must have at least 2048 bits")
        kids.add(kid)
        kept.append({**imported.as_dict(private=False), "kid": kid, "alg": algorithm})
    return json.dumps({"keys": kept}, sort_keys=True)


async def add_client(
    conn: AsyncConnection,
    *,
    agreement_id: str,
    known_agreements: set[str],
    name: str | None = None,
    jwks: Any = None,
    with_secret: bool = False,
) -> NewClient:
    """Register a client with public keys (`jwks`), a secret, or both, as its agreement allows."""
    if agreement_id not in known_agreements:
        raise UnknownAgreementError(
            f"no agreement '{agreement_id}' (known: {', '.join(sorted(known_agreements))})"
        )
    if jwks is None and not with_secret:
        raise ClientKeysError("a client needs its public keys (--jwks) or, where allowed, a secret")
    client_id = f"{agreement_id}-{secrets.token_hex(6)}"
    secret = secrets.token_urlsafe(32) if with_secret else None
    record = ClientRecord(
        client_id=client_id,
        name=name or client_id,
        agreement_id=agreement_id,
        secret_hash=hash_secret(secret) if secret else None,
        created_at=datetime.now(UTC),
        disabled_at=None,
        jwks=checked_jwks(jwks) if jwks is not None else None,
    )
    await conn.execute(
        insert(clients).values(
            client_id=record.client_id,
            name=record.name,
            agreement_id=record.agreement_id,
            secret_hash=record.secret_hash,
            created_at=record.created_at,
            jwks=record.jwks,
        )
    )
    await announce(conn, f"client-added:{client_id}:{agreement_id}")
    return NewClient(record=record, secret=secret)


async def replace_keys(conn: AsyncConnection, client_id: str, jwks: Any) -> ClientRecord:
    """Replace a client's public keys (the partner rotated its keys)."""
    stored = checked_jwks(jwks)
    result = await conn.execute(update(clients).where(clients.c.client_id == client_id).values(jwks=stored))
    if result.rowcount == 0:
        raise UnknownClientError(f"no client '{client_id}'")
    record = await get_client(conn, client_id)
    assert record is not None
    return record


async def get_client(conn: AsyncConnection, client_id: str) -> ClientRecord | None:
    row = (await conn.execute(select(clients).where(clients.c.client_id == client_id))).first()
    return None if row is None else ClientRecord(**row._mapping)


async def list_clients(conn: AsyncConnection) -> list[ClientRecord]:
    rows = (await conn.execute(select(clients).order_by(clients.c.agreement_id, clients.c.client_id))).all()
    return [ClientRecord(**row._mapping) for row in rows]


async def disable_client(conn: AsyncConnection, client_id: str) -> ClientRecord:
    """Disable a client: its token requests are refused from the commit on, and its live tokens in
    every gateway process as soon as the notice announced at commit reaches it (see
    gateway.oauth.revocations)."""
    # Disabling twice is not an error: the client stays disabled since the first time.
    await conn.execute(
        update(clients)
        .where(clients.c.client_id == client_id, clients.c.disabled_at.is_(None))
        .values(disabled_at=datetime.now(UTC))
    )
    record = await get_client(conn, client_id)
    if record is None:
        raise UnknownClientError(f"no client '{client_id}'")
    await announce(conn, f"client-disabled:{client_id}")
    return record


REVOCATION_CHANNEL: Final = "gateway_revocations"


async def announce(conn: AsyncConnection, change: str) -> None:
    """Tell every gateway process of a client added or disabled or a token revoked, at commit
    (PostgreSQL NOTIFY; on SQLite each request reads the database, so there is no one to tell)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_notify(:channel, :change)"), {"channel": REVOCATION_CHANNEL, "change": change}
        )
