"""Partner identities as the tests make them: client keys, client assertions, DPoP keys, and stand-ins
for the partners' own identity providers (whose public keys the gateway trusts from a directory).

Deliberately written apart from the gateway's code (`gateway.cli.partner` included): these are the
partner's side of the protocol, so that a mistake on the server's side is not repeated here.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from joserfc import jwt
from joserfc.jwk import ECKey

from policies import Agreement

OFFICER = "officer-1234"  # the acting user the tests' officers are, matching tests.support.partners.PURPOSE


def new_key() -> ECKey:
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256"}, private=True)
    key.ensure_kid()
    return key


def jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [{**key.as_dict(private=False), "alg": "ES256"} for key in keys]}


class RegisteredClient(NamedTuple):
    client_id: str
    key: ECKey  # signs its client assertions (private_key_jwt)
    dpop_key: ECKey  # signs its DPoP proofs


def signed(key: Any, header: dict[str, Any], claims: dict[str, Any], changes: dict[str, Any]) -> str:
    """A JWT of `claims` as changed: a change replaces a claim or, with None, removes it; a `header`
    change replaces the header."""
    header = changes.pop("header", None) or header
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def assertion(client_id: str, key: ECKey, audience: Any, **changes: Any) -> str:
    """A client assertion (RFC 7523); `changes` replace or (with None) remove claims, and `header`
    replaces the header."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }  # fmt: skip
    return signed(key, {"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, changes)


@dataclass
class TestIssuer:
    """A partner's identity provider, as far as the gateway sees one: a key and the claims it signs."""

    issuer: str
    audience: str
    officer_claim: str
    key: ECKey

    def token(self, officer: str = OFFICER, **changes: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": officer, self.officer_claim: officer,
            "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(12),
        }  # fmt: skip
        return signed(self.key, {"alg": "ES256", "kid": self.key.kid, "typ": "JWT"}, claims, changes)


_INSTALLED: dict[Path, dict[str, TestIssuer]] = {}


def installed_issuers(directory: Path) -> dict[str, TestIssuer]:
    """The stand-ins `install_issuers` put in `directory` (a test's settings name the directory)."""
    return _INSTALLED.get(directory, {})


def install_issuers(agreements: dict[str, Agreement], directory: Path) -> dict[str, TestIssuer]:
    """A stand-in for every officer issuer the agreements name, its public keys installed in
    `directory` as the operator would. Keyed by agreement id (each agreement names one here)."""
    if directory in _INSTALLED:
        return _INSTALLED[directory]
    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, TestIssuer] = {}
    by_issuer: dict[str, TestIssuer] = {}
    for agreement in agreements.values():
        for issuer in agreement.access.officer_issuers:
            if issuer.issuer not in by_issuer:
                key = new_key()
                by_issuer[issuer.issuer] = TestIssuer(
                    issuer.issuer, issuer.audience, issuer.officer_claim, key
                )
                assert issuer.jwks_file is not None
                (directory / issuer.jwks_file).write_text(json.dumps(jwks(key)))
            made.setdefault(agreement.id, by_issuer[issuer.issuer])
    _INSTALLED[directory] = made
    return made
