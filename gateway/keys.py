"""The gateway's token-signing keys (ES256, P-256), and their rotation.

The key set is a JWK set, read from GATEWAY_SIGNING_KEY_FILE or, where a platform hands secrets over
as environment variables, from GATEWAY_SIGNING_KEYS (the same JSON). The first key signs tokens and
the ledger's checkpoints. `gateway keys rotate` puts a new key first and marks the one it replaces as
retired (`"retired": {kid: time}` beside `"keys"`): a retired key is still published in the JWKS and
accepted for tokens until every token it signed has expired (the longest token lifetime and the
leeway), then leaves both. Its public half is archived beside the key file (`<file>.public/<kid>.json`)
when it is retired, because the checkpoints it signed must verify for as long as the ledger is kept;
`gateway audit verify` reads that archive too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

ALGORITHM: Final = "ES256"
# How long a retired key stays published and accepted: the longest token lifetime, the leeway, a margin.
RETIREMENT: Final = timedelta(minutes=15)


class SigningKeyError(Exception):
    pass


@dataclass(frozen=True)
class SigningKeys:
    active: ECKey
    verification: KeySet  # tokens: the active key and those retired within RETIREMENT
    public_jwks: dict[str, Any]  # what /.well-known/jwks.json publishes: the same keys
    archived: tuple[dict[str, Any], ...] = field(default=())  # public halves of keys retired for good

    @classmethod
    def from_keys(
        cls,
        keys: list[ECKey],
        *,
        retired: dict[str, datetime] | None = None,
        archived: tuple[dict[str, Any], ...] = (),
        now: datetime | None = None,
    ) -> SigningKeys:
        if not keys:
            raise SigningKeyError("the key set is empty")
        for key in keys:
            if key.get("crv") != "P-256" or not key.is_private:
                raise SigningKeyError("every key must be a private P-256 (ES256) key")
            key.ensure_kid()
        retired = retired or {}
        moment = now or datetime.now(UTC)
        if keys[0].kid in retired:
            raise SigningKeyError("the first key signs: it cannot be retired")
        current = [key for key in keys if key.kid not in retired or moment - retired[key.kid] < RETIREMENT]
        public = [_public(key) for key in current]
        return cls(
            active=keys[0],
            verification=KeySet.import_key_set({"keys": public}),
            public_jwks={"keys": public},
            archived=(*archived, *(_public(key) for key in keys if key not in current)),
        )

    @property
    def audit_verification(self) -> KeySet:
        """Every public key the gateway ever signed with that is known here: for checkpoints, which
        outlive the tokens a key signed."""
        seen: dict[str, dict[str, Any]] = {}
        for key in (*self.archived, *self.public_jwks["keys"]):
            seen.setdefault(str(key.get("kid")), key)
        return KeySet.import_key_set({"keys": list(seen.values())})


def _public(key: ECKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "alg": ALGORITHM, "use": "sig"}


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the gateway's secret (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"partner-gateway/derived/v1", info=purpose.encode()
    ).derive(secret)


def generate_key() -> ECKey:
    key = ECKey.generate_key("P-256", parameters={"alg": ALGORITHM, "use": "sig"}, private=True)
    key.ensure_kid()
    return key


def write_key_file(path: Path, keys: list[ECKey], *, retired: dict[str, datetime] | None = None) -> None:
    """Write private keys with owner-only permissions, replacing the file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {"keys": [key.as_dict(private=True) for key in keys]}
    if retired:
        body["retired"] = {kid: moment.astimezone(UTC).isoformat() for kid, moment in retired.items()}
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(body, indent=2))
    os.replace(partial, path)


def archive_directory(path: Path) -> Path:
    return path.with_name(path.name + ".public")


def load_key_file(path: Path, *, now: datetime | None = None) -> SigningKeys:
    if not path.is_file():
        raise SigningKeyError(
            f"no signing key file at {path}: set GATEWAY_SIGNING_KEY_FILE, or run `gateway keys generate`"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SigningKeyError(f"cannot read {path} ({error.strerror or type(error).__name__})") from None
    return signing_keys_from_json(text, source=str(path), archive=archive_directory(path), now=now)


def signing_keys_from_json(
    text: str, *, source: str, archive: Path | None = None, now: datetime | None = None
) -> SigningKeys:
    """Keys from a file's text, or from GATEWAY_SIGNING_KEYS."""
    try:
        data = json.loads(text)
        keys = [ECKey.import_key(item) for item in data["keys"]]
        retired = {kid: datetime.fromisoformat(moment) for kid, moment in data.get("retired", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError, JoseError) as error:
        raise SigningKeyError(
            f"{source} is not a JWK set of private P-256 keys ({type(error).__name__}): "
            "the gateway signs with ES256 only"
        ) from None
    archived: list[dict[str, Any]] = []
    if archive is not None and archive.is_dir():
        for file in sorted(archive.glob("*.json")):
            try:
                archived += json.loads(file.read_text(encoding="utf-8"))["keys"]
            except (OSError, ValueError, KeyError, TypeError):
                raise SigningKeyError(f"{file} is not an archived public key set") from None
    return SigningKeys.from_keys(keys, retired=retired, archived=tuple(archived), now=now)


def rotate_key_file(path: Path, *, now: datetime | None = None) -> tuple[ECKey, list[str]]:
    """Put a new key first; retire the one it replaces (archiving its public half); drop the private
    halves of keys retired for longer than RETIREMENT. Returns the new key and the kids dropped."""
    moment = now or datetime.now(UTC)
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = [ECKey.import_key(item) for item in data["keys"]]
    retired = {kid: datetime.fromisoformat(at) for kid, at in data.get("retired", {}).items()}
    archive = archive_directory(path)
    archive.mkdir(mode=0o700, exist_ok=True)
    previous = keys[0]
    previous.ensure_kid()
    (archive / f"{previous.kid}.json").write_text(json.dumps({"keys": [_public(previous)]}, indent=2))
    retired[str(previous.kid)] = moment
    fresh = generate_key()
    dropped = [
        str(key.kid) for key in keys if key.kid in retired and moment - retired[str(key.kid)] >= RETIREMENT
    ]
    kept = [fresh, *(key for key in keys if str(key.kid) not in dropped)]
    write_key_file(path, kept, retired={kid: at for kid, at in retired.items() if kid not in dropped})
    return fresh, dropped
