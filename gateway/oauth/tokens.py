"""Access tokens: issued by the token endpoint, checked on every request to /graphql.

An access token is an RFC 9068 JWT (`typ: at+jwt`) signed ES256 by the gateway's active key, for
at most ten minutes: `iss` the gateway, `aud` exactly its /graphql audience, `sub` and `client_id` the
client, `scope` the client's one agreement, a fresh `jti`; `cnf.jkt` when the token is bound to the
client's DPoP key (RFC 9449); `act` when it was exchanged for an officer's token (RFC 8693).

Checking is done with joserfc directly rather than authlib's resource protector (which accepts a token
without `typ` and checks claims only in a later step), in one place: the header first (`typ`, `alg`
pinned, a `kid` the gateway published, no key or key location carried in the token), then the
signature, then `iss`, `aud` (a string, or an array holding that one audience and nothing else), `exp`,
`nbf` and `iat` with a small leeway, `sub` = `client_id`, `jti` and `scope`.

Exceptions:
    InvalidTokenError   any reason at all; `description` is safe to return in WWW-Authenticate
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwt import JWTClaimsRegistry

from gateway.keys import ALGORITHM, SigningKeys

MAX_TOKEN_LENGTH: Final = 4096
MAX_TTL_SECONDS: Final = 600
ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
_ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
# Header parameters that carry a key or say where to fetch one: never followed, always refused.
KEY_CARRYING_HEADERS: Final = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"})


class InvalidTokenError(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Officer:
    """The acting user, as a partner's identity provider named them (the token's `act` claim)."""

    subject: str
    issuer: str


@dataclass(frozen=True, slots=True)
class AccessClaims:
    client_id: str
    scope: str
    jti: str
    expires_at: int
    jkt: str | None = None  # the thumbprint of the DPoP key the token is bound to
    officer: Officer | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_in: int
    expires_at: int


class TokenIssuer:
    def __init__(self, signing: SigningKeys, *, issuer: str, audience: str, ttl: int) -> None:
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"an access token lives at most {MAX_TTL_SECONDS} seconds")
        self._signing = signing
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl

    def issue(
        self, *, client_id: str, scope: str, jkt: str | None = None, officer: Officer | None = None
    ) -> IssuedToken:
        now = int(time.time())
        jti = secrets.token_urlsafe(18)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": client_id,
            "aud": self._audience,
            "exp": now + self._ttl,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "client_id": client_id,
            "scope": scope,
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        if officer is not None:
            claims["act"] = {"sub": officer.subject, "iss": officer.issuer}
        key = self._signing.active
        token = jwt.encode(
            {"alg": ALGORITHM, "kid": key.kid, "typ": ACCESS_TOKEN_TYPE}, claims, key, algorithms=[ALGORITHM]
        )
        return IssuedToken(token=token, jti=jti, expires_in=self._ttl, expires_at=now + self._ttl)


VERIFIED_KEPT: Final = 4_096  # tokens kept once verified, per process


class TokenVerifier:
    def __init__(self, keys: SigningKeys, *, issuer: str, audience: str, leeway: int) -> None:
        self._keys = keys  # read per token: a rotation reaches a running gateway
        self._verified: dict[str, tuple[AccessClaims, Any]] = {}  # raw token -> its claims, its key id
        self._audience = audience
        self._leeway = leeway
        self._claims = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            client_id={"essential": True},
            jti={"essential": True},
            scope={"essential": True},
        )

    def verify(self, raw: str) -> AccessClaims:
        """The token's claims, if the gateway signed it with a key it still publishes and it has not
        expired. A token once verified is kept (VERIFIED_KEPT at most) until it expires or its key is
        no longer published: a partner sends the same token with every request, and checking its
        signature again each time was the largest part of a lookup's cost after the lookup itself.
        Revocation is not the signature's business: the endpoint checks it on every request."""
        kept = self._verified.get(raw)
        if kept is not None:
            claims, kid = kept
            if time.time() <= claims.expires_at + self._leeway and any(
                key.kid == kid for key in self._keys.verification.keys
            ):
                return claims
            del self._verified[raw]
        claims = self._verify(raw)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        self._verified[raw] = (claims, _header(raw).get("kid"))
        return claims

    def _verify(self, raw: str) -> AccessClaims:
        if not raw or len(raw) > MAX_TOKEN_LENGTH or raw.count(".") != 2:
            raise InvalidTokenError("malformed token")
        header = _header(raw)
        if str(header.get("typ", "")).lower() not in _ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("not an access token (typ must be at+jwt)")
        if header.get("alg") != ALGORITHM or KEY_CARRYING_HEADERS & set(header):
            raise InvalidTokenError("the token's header is not one the gateway signs")
        keys = self._keys.verification
        if header.get("kid") not in {key.kid for key in keys.keys}:
            raise InvalidTokenError("the token was not signed by a key the gateway publishes")
        try:
            token = jwt.decode(raw, keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise InvalidTokenError("malformed token or bad signature") from None
        try:
            self._claims.validate(token.claims)
        except JoseError as error:
            raise InvalidTokenError(_claim_problem(error)) from None
        return self._claims_of(token.claims)

    def _claims_of(self, claims: dict[str, Any]) -> AccessClaims:
        audience = claims["aud"]
        if audience != self._audience and audience != [self._audience]:
            raise InvalidTokenError("the token is for another audience too")
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or iat > time.time() + self._leeway:
            raise InvalidTokenError("the token was issued in the future")
        if not isinstance(exp, int) or exp - iat > MAX_TTL_SECONDS:
            raise InvalidTokenError("the token lives longer than the gateway issues")
        client_id, scope, jti = claims["client_id"], claims["scope"], claims["jti"]
        if not (isinstance(client_id, str) and isinstance(scope, str) and isinstance(jti, str)):
            raise InvalidTokenError("malformed claims")
        if claims.get("sub") != client_id:
            raise InvalidTokenError("sub must be the client")
        return AccessClaims(
            client_id=client_id,
            scope=scope,
            jti=jti,
            expires_at=exp,
            jkt=_jkt(claims.get("cnf")),
            officer=_officer(claims.get("act")),
        )


def is_numeric_date(value: Any) -> TypeGuard[int | float]:
    """RFC 7519 2: a NumericDate is a JSON number, fractions allowed (a boolean is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _header(raw: str) -> dict[str, Any]:
    segment = raw.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidTokenError("malformed token") from None
    if not isinstance(header, dict):
        raise InvalidTokenError("malformed token")
    return header


def _jkt(cnf: Any) -> str | None:
    if cnf is None:
        return None
    if not isinstance(cnf, dict) or not isinstance(cnf.get("jkt"), str):
        raise InvalidTokenError("malformed confirmation claim")
    return str(cnf["jkt"])


def _officer(act: Any) -> Officer | None:
    if act is None:
        return None
    if (
        not isinstance(act, dict)
        or not isinstance(act.get("sub"), str)
        or not isinstance(act.get("iss"), str)
    ):
        raise InvalidTokenError("malformed actor claim")
    return Officer(subject=act["sub"], issuer=act["iss"])


def _claim_problem(error: JoseError) -> str:
    if isinstance(error, ExpiredTokenError):
        return "the token has expired"
    if isinstance(error, MissingClaimError):
        return "a required claim is missing"
    if isinstance(error, InvalidClaimError):
        return "a claim has the wrong value"
    return "the token is not valid yet or its claims are malformed"
