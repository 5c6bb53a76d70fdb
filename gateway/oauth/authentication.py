"""Client authentication at the token, introspection and revocation endpoints.

`private_key_jwt` (RFC 7523): the client sends `client_assertion`, a JWT it signed with one of the
keys it registered, naming itself as `iss` and `sub`, for exactly one audience (the token endpoint
or the issuer), living at most five minutes, with a `jti` that is spent in every process at once.
`client_secret_basic`, a shared secret in HTTP Basic, only where the client's agreement lists it.

What does not depend on the client (the shape and claims of an assertion) is checked first and
explained. Everything after is one answer, `invalid_client: client authentication failed`, whether
the client id is unknown, disabled, bound to an agreement that forbids the method, or the signature
or secret is wrong; an unknown client costs the same work, a verification against a key of its own.
Failures are counted per client id and per address (shared by every process): past the limit the
endpoint answers 429 without looking further.

Exceptions:
    ClientAuthenticationError   `status`, `error`, `description` for the answer; `client_id` as claimed
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers

from gateway.oauth.clients import CLIENT_ALGORITHMS, ClientRecord, get_client, hash_secret
from gateway.oauth.tokens import KEY_CARRYING_HEADERS, is_numeric_date
from gateway.state import SharedState
from policies import Agreement

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME: Final = 300  # seconds from iat to exp
MAX_ASSERTION_LENGTH: Final = 4096
# Client ids are made by `gateway clients add` from an agreement id and hex; anything else is not one.
CLIENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FAILURE_WINDOW: Final = 60  # seconds
FAILURES_PER_CLIENT: Final = 10
FAILURES_PER_ADDRESS: Final = 30
_FAILED: Final = "client authentication failed"


class ClientAuthenticationError(Exception):
    def __init__(
        self, description: str, *, client_id: str | None, status: int = 401, error: str = "invalid_client"
    ) -> None:
        super().__init__(description)
        self.description = description
        self.client_id = client_id
        self.status = status
        self.error = error


@dataclass(frozen=True, slots=True)
class Authenticated:
    client: ClientRecord
    agreement: Agreement
    method: str


class ClientAuthenticator:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        agreements: Mapping[str, Agreement],
        audiences: frozenset[str],
        state: SharedState,
        leeway: int,
    ) -> None:
        self._engine = engine
        self._agreements = agreements
        self._audiences = audiences
        self._state = state
        self._leeway = leeway
        # Unknown clients are verified against these, so that they cost what a known client costs.
        self._decoys: dict[str, ECKey | RSAKey] = {
            "ES256": ECKey.generate_key("P-256", private=False),
            "PS256": RSAKey.generate_key(2048, private=False),
        }

    async def authenticate(
        self, headers: Headers, form: Mapping[str, str], *, address: str | None
    ) -> Authenticated:
        """The client that made this request, or ClientAuthenticationError."""
        assertion = form.get("client_assertion")
        basic = headers.get("authorization", "")
        if assertion is not None and basic:
            raise ClientAuthenticationError(
                "use one client authentication method", client_id=None, status=400, error="invalid_request"
            )
        if "client_secret" in form:
            raise ClientAuthenticationError(
                "send no client_secret in the body", client_id=None, status=400, error="invalid_request"
            )
        if assertion is None and not basic.lower().startswith("basic "):
            raise ClientAuthenticationError(
                "client authentication is required (private_key_jwt)", client_id=None
            )
        try:
            if assertion is not None:
                claims, header = self._assertion_claims(assertion, form)
            else:
                client_id, secret = _basic(basic)
        except ClientAuthenticationError:
            await self._count_address(address)  # unreadable credentials are failures too
            raise
        async with self._address_reservation(claims["sub"] if assertion is not None else client_id, address):
            if assertion is not None:
                return await self._private_key_jwt(assertion, header, claims)
            return await self._client_secret_basic(client_id, secret)

    # -- private_key_jwt ------------------------------------------------------------------------

    def _assertion_claims(
        self, assertion: str, form: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The assertion's claims, checked for everything that does not depend on who signed it."""
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise ClientAuthenticationError(f"client_assertion_type must be {ASSERTION_TYPE}", client_id=None)
        if not assertion or len(assertion) > MAX_ASSERTION_LENGTH or assertion.count(".") != 2:
            raise ClientAuthenticationError("the client assertion is malformed", client_id=None)
        header, claims = _unverified(assertion)
        subject = claims.get("sub")
        client_id = subject if isinstance(subject, str) and CLIENT_ID.fullmatch(subject) else None
        if client_id is None or claims.get("iss") != subject:
            raise ClientAuthenticationError("iss and sub must both be the client id", client_id=None)
        if "client_id" in form and form["client_id"] != client_id:
            raise ClientAuthenticationError("client_id differs from the assertion's", client_id=client_id)
        if header.get("alg") not in CLIENT_ALGORITHMS or not isinstance(header.get("kid"), str):
            raise ClientAuthenticationError(
                f"the assertion needs a kid and one of {', '.join(CLIENT_ALGORITHMS)}", client_id=client_id
            )
        if KEY_CARRYING_HEADERS & set(header):
            raise ClientAuthenticationError(
                "the assertion carries or points to a key: only registered keys are used", client_id=client_id
            )
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) == 1:
            audience = audience[0]
        if not isinstance(audience, str) or audience not in self._audiences:
            raise ClientAuthenticationError(
                "aud must be exactly one of the token endpoint or the issuer", client_id=client_id
            )
        now = time.time()
        iat, exp, nbf, jti = (
            claims.get("iat"),
            claims.get("exp"),
            claims.get("nbf", claims.get("iat")),
            claims.get("jti"),
        )
        if not (is_numeric_date(iat) and is_numeric_date(exp) and is_numeric_date(nbf)):
            raise ClientAuthenticationError(
                "the assertion needs iat and exp (NumericDate)", client_id=client_id
            )
        if exp - iat > MAX_ASSERTION_LIFETIME:
            raise ClientAuthenticationError(
                "the assertion may live at most five minutes", client_id=client_id
            )
        if exp < now - self._leeway:
            raise ClientAuthenticationError("the assertion has expired", client_id=client_id)
        if iat > now + self._leeway or nbf > now + self._leeway:
            raise ClientAuthenticationError("the assertion is not valid yet", client_id=client_id)
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise ClientAuthenticationError("the assertion needs a jti", client_id=client_id)
        return claims, header

    async def _private_key_jwt(
        self, assertion: str, header: dict[str, Any], claims: dict[str, Any]
    ) -> Authenticated:
        client_id = str(claims["sub"])
        record, agreement = await self._client(client_id)
        algorithm = str(header["alg"])
        key = None
        if (
            record is not None
            and agreement is not None
            and "private_key_jwt" in agreement.access.client_authentication
        ):
            keys = record.public_keys()
            key = next(
                (k for k in (keys.keys if keys else []) if k.kid == header["kid"] and k.alg == algorithm),
                None,
            )
        verified = False
        try:
            jwt.decode(assertion, key or self._decoys[algorithm], algorithms=[algorithm])
            verified = key is not None
        except (JoseError, ValueError, TypeError):
            verified = False
        if not verified or record is None or agreement is None:
            await self._failed(client_id)
            raise ClientAuthenticationError(_FAILED, client_id=client_id)
        # Spent in every process: an assertion authenticates once.
        if not await self._state.first_use(
            f"assertion:{client_id}:{claims['jti']}", expires_at=int(claims["exp"]) + self._leeway
        ):
            await self._failed(client_id)
            raise ClientAuthenticationError("this client assertion was used before", client_id=client_id)
        return Authenticated(client=record, agreement=agreement, method="private_key_jwt")

    # -- client_secret_basic ----------------------------------------------------------------------

    async def _client_secret_basic(self, client_id: str, secret: str) -> Authenticated:
        record, agreement = await self._client(client_id)
        allowed = agreement is not None and "client_secret_basic" in agreement.access.client_authentication
        stored = record.secret_hash if record is not None and allowed else None
        # The same comparison whether or not there is a secret to compare with.
        matches = (
            _same(stored or hash_secret("not-this-" + secret), hash_secret(secret)) and stored is not None
        )
        if not matches or record is None or agreement is None:
            await self._failed(client_id)
            raise ClientAuthenticationError(_FAILED, client_id=client_id)
        return Authenticated(client=record, agreement=agreement, method="client_secret_basic")

    # -- shared --------------------------------------------------------------------------------------

    async def _client(self, client_id: str) -> tuple[ClientRecord | None, Agreement | None]:
        async with self._engine.connect() as conn:
            record = await get_client(conn, client_id)
        if record is None or not record.is_enabled:
            return None, None
        return record, self._agreements.get(record.agreement_id)

    @asynccontextmanager
    async def _address_reservation(self, client_id: str, address: str | None) -> AsyncIterator[None]:
        """Count this attempt against its address before anything is checked, and give the count back
        if it authenticates (or fails for a reason of the gateway's own). Counting first makes the
        limit hold under concurrency: of a burst of attempts, only those within the limit proceed."""
        if address is None:
            yield
            return
        key, at = f"authfail:address:{address}", time.time()
        if await self._state.hit(key, window_seconds=FAILURE_WINDOW, at=at) > FAILURES_PER_ADDRESS:
            await self._state.hit(key, window_seconds=FAILURE_WINDOW, amount=-1, at=at)
            raise _throttled(client_id)
        failed = False
        try:
            yield
        except ClientAuthenticationError:
            failed = True
            raise
        finally:
            if not failed:
                await self._state.hit(key, window_seconds=FAILURE_WINDOW, amount=-1, at=at)

    async def _count_address(self, address: str | None) -> None:
        if address is not None:
            await self._state.hit(f"authfail:address:{address}", window_seconds=FAILURE_WINDOW)

    async def _failed(self, client_id: str) -> None:
        """Count a failure against the client id (its address is counted already). Past the client
        id's limit a failure is answered 429, but a client that authenticates properly is never
        refused for failures made in its name: anyone can claim a client id, and a key or a 256-bit
        secret cannot be guessed, so a lock on the id would only hand attackers a way to shut a partner
        out."""
        failures = await self._state.hit(f"authfail:client:{client_id}", window_seconds=FAILURE_WINDOW)
        if failures > FAILURES_PER_CLIENT:
            raise _throttled(client_id)


def _throttled(client_id: str) -> ClientAuthenticationError:
    return ClientAuthenticationError(
        "too many failed attempts: try again in a minute",
        client_id=client_id,
        status=429,
        error="temporarily_unavailable",
    )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def _basic(header: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError, IndexError):
        raise ClientAuthenticationError("the client credentials cannot be read", client_id=None) from None
    client_id, separator, secret = decoded.partition(":")
    if not separator or not CLIENT_ID.fullmatch(client_id) or not secret:
        raise ClientAuthenticationError("the client credentials cannot be read", client_id=None)
    return client_id, secret


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header_segment, payload_segment, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(payload_segment + "=" * (-len(payload_segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise ClientAuthenticationError("the client assertion is malformed", client_id=None) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ClientAuthenticationError("the client assertion is malformed", client_id=None)
    return header, claims
