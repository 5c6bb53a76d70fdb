"""Access tokens made by hand, for tests of what /graphql must refuse.

`access_claims` gives the claims a genuine token would carry; each test then breaks one thing.
`sign` uses joserfc with an explicit header (pass the gateway's real key to test claim checks, a
stranger's key to test the signature check). `unsigned` and `hs256` build the classic attacks on
JWT libraries byte by byte, because joserfc rightly refuses to produce them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.config import Settings


def access_claims(settings: Settings, client_id: str, scope: str, /, **changes: Any) -> dict[str, Any]:
    """The claims of a valid access token for this client; `changes` replace (None removes) claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.token_audience,
        "sub": client_id,
        "client_id": client_id,
        "scope": scope,
        "jti": secrets.token_urlsafe(18),
        "iat": now,
        "exp": now + settings.token_ttl_seconds,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def access_header(key: ECKey, /, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}
    for name, value in changes.items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def sign(key: ECKey, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An ES256 JWS; the header is exactly the one given (no `typ` is added when it has none)."""
    return jwt.encode(header or access_header(key), claims, key, algorithms=["ES256"], default_type=None)


def _segment(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`alg: none`: a header, the claims and an empty signature."""
    return f"{_segment({**header, 'alg': 'none'})}.{_segment(claims)}."


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """HMAC-SHA256 keyed with `secret`: the algorithm-confusion attack when `secret` is a public key."""
    signing_input = f"{_segment({**header, 'alg': 'HS256'})}.{_segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def forge(name: str, settings: Settings, key: ECKey, client_id: str, scope: str) -> str:
    """A token that differs from a valid one for this client in the one way `name` says."""
    now, leeway = int(time.time()), settings.token_leeway_seconds

    def claims(**changes: Any) -> dict[str, Any]:
        return access_claims(settings, client_id, scope, **changes)

    def signed(**changes: Any) -> str:
        return sign(key, claims(**changes))

    def stranger() -> ECKey:
        other = ECKey.generate_key("P-256", private=True)
        other.ensure_kid()
        return other

    def by_stranger() -> str:
        other = stranger()
        return sign(other, claims(), access_header(other))

    def tampered() -> str:
        header, _, signature = signed().split(".")
        return f"{header}.{_segment(claims(scope=scope + ' ons-evaluation'))}.{signature}"

    forgeries: dict[str, Callable[[], str]] = {
        "another ES256 key": by_stranger,
        "another key under the real kid": lambda: sign(stranger(), claims(), access_header(key)),
        "alg none": lambda: unsigned(access_header(key), claims()),
        "HS256 keyed with the public PEM": lambda: hs256(
            key.as_pem(private=False), access_header(key), claims()
        ),
        "claims altered after signing": tampered,
        "signature removed": lambda: signed().rsplit(".", 1)[0] + ".",
        "typ JWT": lambda: sign(key, claims(), access_header(key, typ="JWT")),
        "no typ": lambda: sign(key, claims(), access_header(key, typ=None)),
        "wrong iss": lambda: signed(iss="https://idp.example"),
        "wrong aud": lambda: signed(aud=settings.issuer + "/other"),
        "no aud": lambda: signed(aud=None),
        "expired": lambda: signed(iat=now - 3600, exp=now - leeway - 60),
        "no exp": lambda: signed(exp=None),
        "issued in the future": lambda: signed(iat=now + 3600, exp=now + 7200),
        "no jti": lambda: signed(jti=None),
        "no client_id": lambda: signed(client_id=None),
        "sub is not client_id": lambda: signed(sub=client_id + "-other"),
        "another agreement as scope": lambda: signed(scope="ons-evaluation"),
        "two scopes": lambda: signed(scope=f"{scope} ons-evaluation"),
        "no scope": lambda: signed(scope=None),
        "client that does not exist": lambda: sign(
            key, access_claims(settings, "no-such-client-ffff", scope)
        ),
    }
    return forgeries[name]()


FORGERIES = [
    "another ES256 key",
    "another key under the real kid",
    "alg none",
    "HS256 keyed with the public PEM",
    "claims altered after signing",
    "signature removed",
    "typ JWT",
    "no typ",
    "wrong iss",
    "wrong aud",
    "no aud",
    "expired",
    "no exp",
    "issued in the future",
    "no jti",
    "no client_id",
    "sub is not client_id",
    "another agreement as scope",
    "two scopes",
    "no scope",
    "client that does not exist",
]
