"""The gateway's token-signing keys (ES256, P-256).

The key file is a JWK set. The first key signs; every key in the file is published in the JWKS
and accepted for verification, so a new key can be put first while tokens signed by the old one
are still alive, and the old one removed after the longest token lifetime has passed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

ALGORITHM: Final = "ES256"


class SigningKeyError(Exception):
    pass


@dataclass(frozen=True)
class SigningKeys:
    active: ECKey
    verification: KeySet
    public_jwks: dict[str, Any]

    @classmethod
    def from_keys(cls, keys: list[ECKey]) -> SigningKeys:
        if not keys:
            raise SigningKeyError("the key set is empty")
        for key in keys:
            if key.get("crv") != "P-256" or not key.is_private:
                raise SigningKeyError("every key must be a private P-256 (ES256) key")
            key.ensure_kid()
        public = [{**key.as_dict(private=False), "alg": ALGORITHM, "use": "sig"} for key in keys]
        return cls(
            active=keys[0],
            verification=KeySet.import_key_set({"keys": public}),
            public_jwks={"keys": public},
        )


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the gateway's secret (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"partner-gateway/derived/v1", info=purpose.encode()
    ).derive(secret)


def generate_key() -> ECKey:
    key = ECKey.generate_key("P-256", parameters={"alg": ALGORITHM, "use": "sig"}, private=True)
    key.ensure_kid()
    return key


def write_key_file(path: Path, keys: list[ECKey]) -> None:
    """Write private keys with owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"keys": [key.as_dict(private=True) for key in keys]}, indent=2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)


def load_key_file(path: Path) -> SigningKeys:
    if not path.is_file():
        raise SigningKeyError(
            f"no signing key file at {path}: set GATEWAY_SIGNING_KEY_FILE, or run `gateway keys generate`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = [ECKey.import_key(item) for item in data["keys"]]
    except (ValueError, KeyError, TypeError, JoseError) as error:
        raise SigningKeyError(
            f"{path} is not a JWK set of private P-256 keys ({type(error).__name__}): "
            "the gateway signs with ES256 only"
        ) from None
    return SigningKeys.from_keys(keys)
