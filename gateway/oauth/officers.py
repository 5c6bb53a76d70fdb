"""Officers named by a partner's own identity provider: the subject tokens of a token exchange.

An agreement with `acting_user: verified` lists the partner's identity providers (`officer_issuers`):
the issuer, where its public keys are (a file the operator installs in GATEWAY_PARTNER_JWKS_DIR, or
a `jwks_uri`), the audience its tokens for the gateway carry, and the claim that names the officer.
A subject token is checked against exactly that: the issuer must be one of the client's agreement's,
its header may not carry or point to a key (`jwk`, `jku`, `x5u`, `x5c` are refused, never followed),
its `kid` must be one of the issuer's keys, the algorithm pinned, and `aud`, `exp`, `nbf` and `iat`
within a small leeway, its lifetime short.

Keys are cached. A `kid` the cache does not know makes the gateway read the keys again, at most once
a minute per issuer, so a flood of made-up kids cannot turn into a flood of fetches.

Exceptions:
    SubjectTokenError   the subject token does not name an officer the gateway can trust
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from gateway.oauth.tokens import KEY_CARRYING_HEADERS, Officer, is_numeric_date
from policies import OfficerIssuer

SUBJECT_ALGORITHMS: Final = ("ES256", "PS256", "RS256")
MAX_SUBJECT_TOKEN_LENGTH: Final = 8192
MAX_SUBJECT_LIFETIME: Final = 3600  # seconds between iat and exp
REFRESH_INTERVAL: Final = 60.0  # at most one re-read of an issuer's keys per minute
RETRY_INTERVAL: Final = 5.0  # seconds between attempts to read keys that could not be read
_OFFICER: Final = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}"


class SubjectTokenError(Exception):
    pass


@dataclass
class _Cached:
    keys: KeySet | None = None
    read_at: float = 0.0


class OfficerIssuers:
    """The partner issuers' keys, cached, and the check of a subject token against one of them."""

    def __init__(self, *, jwks_dir: Path, leeway: int, client: httpx.AsyncClient | None = None) -> None:
        self._jwks_dir = jwks_dir
        self._leeway = leeway
        self._client = client
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def officer(self, subject_token: str, issuers: tuple[OfficerIssuer, ...]) -> Officer:
        """The officer a subject token names, if one of `issuers` signed it for the gateway."""
        if (
            not subject_token
            or len(subject_token) > MAX_SUBJECT_TOKEN_LENGTH
            or subject_token.count(".") != 2
        ):
            raise SubjectTokenError("the subject token is malformed")
        header, claims = _unverified(subject_token)
        issuer = next((candidate for candidate in issuers if candidate.issuer == claims.get("iss")), None)
        if issuer is None:
            raise SubjectTokenError("the subject token's issuer is not one this agreement trusts")
        if KEY_CARRYING_HEADERS & set(header):
            raise SubjectTokenError("the subject token carries or points to a key: it is never followed")
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in SUBJECT_ALGORITHMS or not isinstance(kid, str):
            raise SubjectTokenError("the subject token needs a kid and an algorithm the gateway accepts")
        keys = await self._keys_with(issuer, kid)
        try:
            verified = jwt.decode(subject_token, keys, algorithms=[algorithm]).claims
        except (JoseError, ValueError, TypeError):
            raise SubjectTokenError("the subject token's signature does not verify") from None
        registry = JWTClaimsRegistry(
            leeway=self._leeway,
            iss={"essential": True, "value": issuer.issuer},
            aud={"essential": True, "value": issuer.audience},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(verified)
        except JoseError:
            raise SubjectTokenError(
                "the subject token is expired, not yet valid, or for another audience"
            ) from None
        iat, exp = verified["iat"], verified["exp"]
        if (
            not (is_numeric_date(iat) and is_numeric_date(exp))
            or iat > time.time() + self._leeway
            or exp - iat > MAX_SUBJECT_LIFETIME
        ):
            raise SubjectTokenError("the subject token's lifetime is not acceptable")
        name = verified.get(issuer.officer_claim)
        if not isinstance(name, str) or not _is_officer(name):
            raise SubjectTokenError(f"the subject token does not name an officer in {issuer.officer_claim}")
        return Officer(subject=name, issuer=issuer.issuer)

    async def _keys_with(self, issuer: OfficerIssuer, kid: str) -> KeySet:
        cached = self._cache.setdefault(issuer.issuer, _Cached())
        if cached.keys is not None and _has(cached.keys, kid):
            return cached.keys
        lock = self._locks.setdefault(issuer.issuer, asyncio.Lock())
        async with lock:
            if cached.keys is not None and _has(cached.keys, kid):
                return cached.keys
            since = time.monotonic() - cached.read_at
            # An unknown kid re-reads at most once a minute; keys that could not be read, every few
            # seconds (never once per token request: a URL that is down is not asked at request rate).
            if since >= (RETRY_INTERVAL if cached.keys is None else REFRESH_INTERVAL):
                cached.read_at = time.monotonic()
                cached.keys = await self._read(issuer)
        if cached.keys is None or not _has(cached.keys, kid):
            raise SubjectTokenError("the subject token's kid is not one of its issuer's keys")
        return cached.keys

    async def _read(self, issuer: OfficerIssuer) -> KeySet | None:
        try:
            if issuer.jwks_file is not None:
                data = json.loads((self._jwks_dir / issuer.jwks_file).read_text(encoding="utf-8"))
            else:
                assert issuer.jwks_uri is not None
                client = self._client or httpx.AsyncClient(timeout=5, follow_redirects=False)
                try:
                    response = await client.get(issuer.jwks_uri, headers={"Accept": "application/json"})
                    response.raise_for_status()
                    data = response.json()
                finally:
                    if self._client is None:
                        await client.aclose()
            public = [
                key for key in data["keys"] if isinstance(key, dict) and "d" not in key and "k" not in key
            ]
            return KeySet.import_key_set({"keys": public})
        except (OSError, ValueError, KeyError, TypeError, JoseError, httpx.HTTPError):
            return None  # unreachable or unreadable: tokens are refused until it can be read again


def _has(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def _is_officer(name: str) -> bool:
    import re

    return re.fullmatch(_OFFICER, name) is not None


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header_segment, payload_segment, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(payload_segment + "=" * (-len(payload_segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise SubjectTokenError("the subject token is malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise SubjectTokenError("the subject token is malformed")
    return header, claims
