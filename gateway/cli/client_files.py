"""Client files: what a partner system needs to reach the gateway, in one JSON file it keeps secret.

`gateway clients add --client-file F` (and the demo) write one; `gateway partner` reads it:

    {"client_id": ..., "agreement": ..., "issuer": ..., "token_endpoint": ..., "graphql_endpoint": ...,
     "key": <private JWK: signs client assertions, private_key_jwt>,
     "dpop_key": <private JWK: signs DPoP proofs>,
     "officer_issuer": {"issuer", "audience", "officer_claim", "key"}   # demo only, see below
     "client_secret": ...}                                               # only where the agreement allows it

In production the partner makes its own keys and registers the public halves (`--jwks`); its
officers' tokens come from its own identity provider. The demo has no such provider, so for an
agreement with verified officers it makes a stand-in: a key whose public half the gateway trusts
(in GATEWAY_PARTNER_JWKS_DIR) and whose private half sits in the client file, so that `gateway partner`
can mint the officer's token itself. Never do that outside a demo.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from gateway.oauth import TOKEN_PATH
from policies import OfficerIssuer


class ClientFileError(Exception):
    pass


def new_key() -> ECKey:
    """A P-256 key with a kid, for a client's assertions or its DPoP proofs."""
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, private=True)
    key.ensure_kid()
    return key


def public_jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [{**key.as_dict(private=False), "alg": "ES256", "use": "sig"} for key in keys]}


@dataclass(frozen=True)
class ClientFile:
    client_id: str
    agreement: str
    issuer: str
    key: ECKey | None
    dpop_key: ECKey
    officer_issuer: dict[str, Any] | None = None
    client_secret: str | None = None

    @property
    def token_endpoint(self) -> str:
        return self.issuer + TOKEN_PATH

    @property
    def graphql_endpoint(self) -> str:
        return self.issuer + "/graphql"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": self.client_id,
            "agreement": self.agreement,
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "graphql_endpoint": self.graphql_endpoint,
            "dpop_key": self.dpop_key.as_dict(private=True),
        }
        if self.key is not None:
            body["key"] = self.key.as_dict(private=True)
        if self.officer_issuer is not None:
            body["officer_issuer"] = {
                **{k: v for k, v in self.officer_issuer.items() if k != "key"},
                "key": self.officer_issuer["key"].as_dict(private=True),
            }
        if self.client_secret is not None:
            body["client_secret"] = self.client_secret
        return body

    def write(self, path: Path, *, exclusive: bool = False) -> None:
        """Written readable by its owner only; `exclusive` refuses to replace an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.as_json(), indent=2) + "\n")

    def officer_token(self, officer: str, *, lifetime: int = 300) -> str:
        """The demo's stand-in identity provider: an officer's token, signed with its key."""
        if self.officer_issuer is None:
            raise ClientFileError(
                "this client file has no officer issuer: pass the officer's token from the partner's "
                "identity provider (--subject-token-file)"
            )
        now = int(time.time())
        issuer = self.officer_issuer
        key: ECKey = issuer["key"]
        claims = {
            "iss": issuer["issuer"],
            "aud": issuer["audience"],
            "sub": officer,
            issuer["officer_claim"]: officer,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["ES256"])


def stand_in_issuer(issuer: OfficerIssuer, jwks_dir: Path) -> dict[str, Any]:
    """For the demo: a key for a partner's identity provider, its public half installed where the
    gateway reads it. Returned as the client file's `officer_issuer`."""
    if issuer.jwks_file is None:
        raise ClientFileError(f"{issuer.issuer} publishes its keys at a URL: the demo cannot stand in for it")
    key = new_key()
    jwks_dir.mkdir(parents=True, exist_ok=True)
    (jwks_dir / issuer.jwks_file).write_text(json.dumps(public_jwks(key), indent=2) + "\n", encoding="utf-8")
    return {
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "officer_claim": issuer.officer_claim,
        "key": key,
    }


def read_client_file(path: Path) -> ClientFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        officer = data.get("officer_issuer")
        if officer is not None:
            officer = {**officer, "key": ECKey.import_key(officer["key"])}
        return ClientFile(
            client_id=data["client_id"],
            agreement=data["agreement"],
            issuer=data["issuer"],
            key=ECKey.import_key(data["key"]) if "key" in data else None,
            dpop_key=ECKey.import_key(data["dpop_key"]),
            officer_issuer=officer,
            client_secret=data.get("client_secret"),
        )
    except OSError as error:
        raise ClientFileError(f"cannot read {path} ({error.strerror or type(error).__name__})") from None
    except (ValueError, KeyError, TypeError, JoseError) as error:
        raise ClientFileError(f"{path} is not a client file ({type(error).__name__})") from None
