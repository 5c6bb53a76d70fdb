"""Checking access tokens presented to /graphql.

Validated with joserfc directly rather than through authlib's resource protector, which accepts a
token without `typ` and checks claims only in a later step. Here every check is in one place: the
signature with the algorithm pinned, `typ` = at+jwt (RFC 9068), then `iss`, `aud`, `exp`, `iat`,
`sub`, `client_id`, `jti` and `scope` as essential claims.

Exceptions:
    InvalidTokenError   any reason at all; `description` is safe to return in WWW-Authenticate
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from gateway.keys import ALGORITHM

MAX_TOKEN_LENGTH: Final = 4096
_ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})


class InvalidTokenError(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class AccessClaims:
    client_id: str
    scope: str
    jti: str
    expires_at: int


class TokenVerifier:
    def __init__(self, keys: KeySet, *, issuer: str, audience: str, leeway: int) -> None:
        self._keys = keys
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
        if not raw or len(raw) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("malformed token")
        try:
            token = jwt.decode(raw, self._keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise InvalidTokenError("malformed token or bad signature") from None
        if str(token.header.get("typ", "")).lower() not in _ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("not an access token (typ must be at+jwt)")
        try:
            self._claims.validate(token.claims)
        except JoseError as error:
            raise InvalidTokenError(_claim_problem(error)) from None
        claims = token.claims
        client_id, scope, jti, exp = claims["client_id"], claims["scope"], claims["jti"], claims["exp"]
        if not (isinstance(client_id, str) and isinstance(scope, str) and isinstance(jti, str)):
            raise InvalidTokenError("malformed claims")
        if claims.get("sub") != client_id:
            raise InvalidTokenError("sub must be the client")
        return AccessClaims(client_id=client_id, scope=scope, jti=jti, expires_at=int(exp))


def _claim_problem(error: JoseError) -> str:
    if isinstance(error, ExpiredTokenError):
        return "the token has expired"
    if isinstance(error, MissingClaimError):
        return "a required claim is missing"
    if isinstance(error, InvalidClaimError):
        return "a claim has the wrong value"
    return "the token is not valid yet or its claims are malformed"
