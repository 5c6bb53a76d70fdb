"""DPoP (RFC 9449): tokens that work only with the key of the client they were issued to.

A client sends, with each request, a proof: a JWT it signs with its DPoP key, carrying the public
key in its header (`typ: dpop+jwt`, `jwk`), and in its claims the method and URL of this request
(`htm`, `htu`), when it was made (`iat`), a unique `jti`, the server's `nonce`, and at a resource the
hash of the access token it accompanies (`ath`). The token endpoint binds the token to the key's
RFC 7638 thumbprint (`cnf.jkt`); /graphql then refuses the token without a fresh proof by that key.

Nonces are stateless: a time window and an HMAC of it under a key derived from the gateway's secret,
so that every process issues and accepts the same ones. A proof with no nonce, or one more than two
windows old, is answered `use_dpop_nonce` with a fresh `DPoP-Nonce`, and the client tries again.

authlib has no DPoP (its pull request is open), so proofs are checked here on joserfc. `make_proof`
is the client's side, for the reference partner client and the tests.

Exceptions:
    DPoPError   `error` is the RFC 9449 code (invalid_dpop_proof, use_dpop_nonce); `description` is
                safe to send back
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry

from gateway.oauth.tokens import is_numeric_date
from gateway.state import SharedState

PROOF_TYPE: Final = "dpop+jwt"
ALGORITHMS: Final = ("ES256", "PS256")
MAX_PROOF_LENGTH: Final = 4096
NONCE_WINDOW: Final = 60  # seconds; a nonce is good for this window and the next
PROOF_MAX_AGE: Final = 60  # seconds an iat may be old (or ahead, within the leeway)


class DPoPError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Proof:
    jkt: str  # the thumbprint of the key that signed it
    jti: str


class Nonces:
    """Stateless nonces: `<window>.<HMAC(key, window)>`, accepted for this window and the one before."""

    def __init__(self, key: bytes, *, window: int = NONCE_WINDOW) -> None:
        self._key = key
        self._window = window

    def current(self, now: float | None = None) -> str:
        return self._make(int((now or time.time()) // self._window))

    def is_fresh(self, nonce: str, now: float | None = None) -> bool:
        current = int((now or time.time()) // self._window)
        return any(hmac.compare_digest(nonce, self._make(window)) for window in (current, current - 1))

    def _make(self, window: int) -> str:
        mac = hmac.new(self._key, str(window).encode(), hashlib.sha256).digest()[:16]
        return f"{window}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


class _ProofRegistry(JWSRegistry):
    # A proof carries its public key in its header (RFC 9449 4.2): an RSA key's header passes
    # joserfc's default limit of 512 bytes.
    max_header_length = 2048


class ProofChecker:
    def __init__(self, *, replay: SharedState, nonces: Nonces | None, leeway: int) -> None:
        """`nonces` None: proofs need no server nonce (RFC 9449 makes nonces the server's choice)."""
        self._replay = replay
        self._nonces = nonces
        self._leeway = leeway

    async def check(
        self, header_values: list[str], *, method: str, url: str, access_token: str | None
    ) -> Proof:
        """The proof of one request, checked against its method and URL (and its access token at a
        resource), and its jti spent. `header_values`: every DPoP header the request carried."""
        if not header_values:
            raise DPoPError("invalid_dpop_proof", "a DPoP proof is required")
        if len(header_values) > 1:
            raise DPoPError("invalid_dpop_proof", "send exactly one DPoP header")
        raw = header_values[0].strip()
        if not raw or len(raw) > MAX_PROOF_LENGTH or raw.count(".") != 2:
            raise DPoPError("invalid_dpop_proof", "the DPoP proof is malformed")
        header = _header(raw)
        if header.get("typ") != PROOF_TYPE:
            raise DPoPError("invalid_dpop_proof", "the DPoP proof's typ must be dpop+jwt")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise DPoPError(
                "invalid_dpop_proof", f"the DPoP proof must be signed with {' or '.join(ALGORITHMS)}"
            )
        if {"jku", "x5u", "x5c", "kid"} & set(header):
            raise DPoPError(
                "invalid_dpop_proof", "the DPoP proof must carry its key as jwk, and nothing else"
            )
        key = _public_key(header.get("jwk"), algorithm)
        try:
            claims = jwt.decode(raw, key, registry=_ProofRegistry(algorithms=[algorithm])).claims
        except (JoseError, ValueError, TypeError):
            raise DPoPError("invalid_dpop_proof", "the DPoP proof's signature does not verify") from None
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise DPoPError("invalid_dpop_proof", "the DPoP proof needs a jti")
        if claims.get("htm") != method:
            raise DPoPError("invalid_dpop_proof", "the DPoP proof is for another method")
        if not isinstance(claims.get("htu"), str) or _normal(claims["htu"]) != _normal(url):
            raise DPoPError("invalid_dpop_proof", "the DPoP proof is for another URL")
        iat = claims.get("iat")
        now = time.time()
        if not is_numeric_date(iat) or iat > now + self._leeway or iat < now - PROOF_MAX_AGE - self._leeway:
            raise DPoPError("invalid_dpop_proof", "the DPoP proof is not fresh (iat)")
        if access_token is not None and claims.get("ath") != token_hash(access_token):
            raise DPoPError("invalid_dpop_proof", "the DPoP proof is for another access token (ath)")
        if self._nonces is not None:
            nonce = claims.get("nonce")
            if not isinstance(nonce, str) or not self._nonces.is_fresh(nonce):
                raise DPoPError("use_dpop_nonce", "use the DPoP-Nonce this answer carries")
        # The method, not joserfc.jwk.thumbprint(dict): that one hashes every member present (alg, kid...),
        # which is not RFC 7638 and would not match a client's own computation.
        jkt = key.thumbprint()
        # Spent in every process: a proof is good once, whoever receives it.
        if not await self._replay.first_use(
            f"dpop:{jkt}:{jti}", expires_at=int(now) + PROOF_MAX_AGE + 2 * self._leeway
        ):
            raise DPoPError("invalid_dpop_proof", "this DPoP proof was used before")
        return Proof(jkt=jkt, jti=jti)

    def nonce(self) -> str | None:
        return self._nonces.current() if self._nonces is not None else None


def token_hash(access_token: str) -> str:
    """`ath`: base64url of the SHA-256 of the access token (RFC 9449 4.2)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_proof(
    key: ECKey | RSAKey, *, method: str, url: str, access_token: str | None = None, nonce: str | None = None
) -> str:
    """A client's proof for one request (the reference partner client, and the tests)."""
    algorithm = "ES256" if isinstance(key, ECKey) else "PS256"
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": PROOF_TYPE, "alg": algorithm, "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key, algorithms=[algorithm])


def challenge(error: str | None, description: str | None, *, realm: str) -> str:
    """A `WWW-Authenticate: DPoP ...` value naming the algorithms proofs may use."""
    parts = [f'realm="{realm}"', f'algs="{" ".join(ALGORITHMS)}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    return "DPoP " + ", ".join(parts)


def _header(raw: str) -> dict[str, Any]:
    segment = raw.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise DPoPError("invalid_dpop_proof", "the DPoP proof is malformed") from None
    if not isinstance(header, dict):
        raise DPoPError("invalid_dpop_proof", "the DPoP proof is malformed")
    return header


def _public_key(jwk: Any, algorithm: str) -> ECKey | RSAKey:
    if not isinstance(jwk, dict) or any(part in jwk for part in ("d", "p", "q", "k")):
        raise DPoPError("invalid_dpop_proof", "the DPoP proof's jwk must be a public key")
    try:
        if algorithm == "ES256" and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            return ECKey.import_key(jwk)
        if algorithm == "PS256" and jwk.get("kty") == "RSA":
            key = RSAKey.import_key(jwk)
            if getattr(key.raw_value, "key_size", 0) >= 2048:
                return key
    except (JoseError, ValueError, TypeError, KeyError):
        pass
    raise DPoPError("invalid_dpop_proof", "the DPoP proof's jwk does not fit its alg")


def _normal(url: str) -> str:
    """A URL as RFC 9449 compares it: no query or fragment, scheme and host in lower case."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))
