"""The gateway's token-signing keys (ES256, P-256), and their rotation.

The key set is a JWK set, read from GATEWAY_SIGNING_KEY_FILE or, where a platform hands secrets over
as environment variables, from GATEWAY_SIGNING_KEYS (the same JSON). One key signs tokens and the
ledger's checkpoints: the first that has started signing and not been retired. `gateway keys rotate`
puts a new key first with `"signs_from"` a minute ahead and marks the one it replaces as retired at
that moment (`"retired": {kid: time}` beside `"keys"`). Running gateways look at the file every few
seconds, so every process publishes and accepts the new key before any signs with it. A retired key is
still published in the JWKS and accepted for tokens until every token it signed has expired (the
longest token lifetime and the leeway), then leaves both. Its public half is archived beside the key
file (`<file>.public/<kid>.json`) when it is retired, because the checkpoints it signed must verify
for as long as the ledger is kept; `gateway audit verify` reads that archive too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from gateway.config import Settings

ALGORITHM: Final = "ES256"
# How long a retired key stays published and accepted: the longest token lifetime, the leeway, a margin.
RETIREMENT: Final = timedelta(minutes=15)
# How often a running gateway looks at its key file again.
REFRESH_SECONDS: Final = 5.0
# How long after `keys rotate` the new key starts signing: published (and accepted) by every process
# first, so that no process meets a token signed by a key it has not read yet.
SIGNS_AFTER: Final = timedelta(seconds=60)

logger = logging.getLogger(__name__)


class SigningKeyError(Exception):
    pass


@dataclass(frozen=True)
class KeyFile:
    """What a key file (or GATEWAY_SIGNING_KEYS) holds, before the time of day is applied to it."""

    keys: tuple[ECKey, ...]
    retired: Mapping[str, datetime] = field(default_factory=dict)  # kid: when it stopped (stops) signing
    signs_from: Mapping[str, datetime] = field(default_factory=dict)  # kid: when it starts signing
    archived: tuple[dict[str, Any], ...] = ()  # public halves archived beside the file

    def __post_init__(self) -> None:
        if not self.keys:
            raise SigningKeyError("the key set is empty")
        for key in self.keys:
            if key.get("crv") != "P-256" or not key.is_private:
                raise SigningKeyError("every key must be a private P-256 (ES256) key")
            key.ensure_kid()


@dataclass(frozen=True)
class KeysNow:
    """The keys at one moment: the one that signs, the ones that verify tokens, the JWKS."""

    active: ECKey
    verification: KeySet  # tokens: the signing key, keys about to sign, those retired within RETIREMENT
    public_jwks: dict[str, Any]  # what /.well-known/jwks.json publishes: the same keys
    archived: tuple[dict[str, Any], ...]  # public halves of keys retired for good

    @classmethod
    def at(cls, data: KeyFile, moment: datetime) -> KeysNow:
        def signing(key: ECKey) -> bool:
            kid = str(key.kid)
            started = kid not in data.signs_from or data.signs_from[kid] <= moment
            return started and not (kid in data.retired and data.retired[kid] <= moment)

        active = next((key for key in data.keys if signing(key)), None)
        if active is None:
            raise SigningKeyError("no key signs now: every key is retired or waiting for its time")
        current = [
            key
            for key in data.keys
            if str(key.kid) not in data.retired or moment - data.retired[str(key.kid)] < RETIREMENT
        ]
        public = [_public(key) for key in current]
        return cls(
            active=active,
            verification=KeySet.import_key_set({"keys": public}),
            public_jwks={"keys": public},
            archived=(*data.archived, *(_public(key) for key in data.keys if key not in current)),
        )

    @property
    def audit_verification(self) -> KeySet:
        """Every public key the gateway ever signed with that is known here: for checkpoints, which
        outlive the tokens a key signed."""
        seen: dict[str, dict[str, Any]] = {}
        for key in (*self.archived, *self.public_jwks["keys"]):
            seen.setdefault(str(key.get("kid")), key)
        return KeySet.import_key_set({"keys": list(seen.values())})


class SigningKeys:
    """The gateway's keys as they stand now. A key file is looked at again every REFRESH_SECONDS (its
    modification time, then its text if that changed), and retirement and `signs_from` are applied to
    the time of each look, so that `gateway keys rotate` reaches every running process without a
    restart. A file that cannot be read any more leaves the keys read last in force (and says so once).
    Read `active`, `verification` or `public_jwks` where they are used; never keep them."""

    def __init__(
        self,
        data: KeyFile,
        *,
        reread: Callable[[], KeyFile | None] | None = None,
        now: datetime | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._data = data
        self._reread = reread
        self._fixed = now
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._view = KeysNow.at(data, self._moment())
        self._looked = time.monotonic()

    @classmethod
    def from_keys(
        cls,
        keys: list[ECKey],
        *,
        retired: dict[str, datetime] | None = None,
        signs_from: dict[str, datetime] | None = None,
        archived: tuple[dict[str, Any], ...] = (),
        now: datetime | None = None,
    ) -> SigningKeys:
        """Keys held in memory (tests, GATEWAY_SIGNING_KEYS); `now` fixes the moment they are seen at."""
        return cls(KeyFile(tuple(keys), retired or {}, signs_from or {}, archived), now=now)

    def _moment(self) -> datetime:
        return self._fixed or datetime.now(UTC)

    def now(self) -> KeysNow:
        if time.monotonic() - self._looked >= self._refresh_seconds:
            with self._lock:
                if time.monotonic() - self._looked >= self._refresh_seconds:
                    self._refresh()
        return self._view

    def _refresh(self) -> None:
        self._looked = time.monotonic()
        try:
            fresh = self._reread() if self._reread is not None else None
            if fresh is not None:
                self._data = fresh
            self._view = KeysNow.at(self._data, self._moment())
        except SigningKeyError as error:
            logger.warning("signing keys: %s; the keys read before stay in force", error)

    @property
    def active(self) -> ECKey:
        return self.now().active

    @property
    def verification(self) -> KeySet:
        return self.now().verification

    @property
    def public_jwks(self) -> dict[str, Any]:
        return self.now().public_jwks

    @property
    def audit_verification(self) -> KeySet:
        return self.now().audit_verification


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


def write_key_file(
    path: Path,
    keys: list[ECKey],
    *,
    retired: Mapping[str, datetime] | None = None,
    signs_from: Mapping[str, datetime] | None = None,
) -> None:
    """Write private keys with owner-only permissions, replacing the file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {"keys": [key.as_dict(private=True) for key in keys]}
    if retired:
        body["retired"] = {kid: moment.astimezone(UTC).isoformat() for kid, moment in retired.items()}
    if signs_from:
        body["signs_from"] = {kid: moment.astimezone(UTC).isoformat() for kid, moment in signs_from.items()}
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(body, indent=2))
    os.replace(partial, path)


def archive_directory(path: Path) -> Path:
    return path.with_name(path.name + ".public")


def load_key_file(
    path: Path, *, now: datetime | None = None, refresh_seconds: float = REFRESH_SECONDS
) -> SigningKeys:
    """The keys in a key file, looked at again every `refresh_seconds` while the gateway runs."""
    stamp = _stamp(path)
    data = read_key_file(path)

    def reread() -> KeyFile | None:
        nonlocal stamp
        seen = _stamp(path)
        if seen == stamp:
            return None
        fresh = read_key_file(path)
        stamp = seen
        return fresh

    return SigningKeys(data, reread=reread, now=now, refresh_seconds=refresh_seconds)


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when the key file or its archive does (a Kubernetes Secret is swapped, not edited)."""
    try:
        stats = [path.stat()]
    except OSError:
        return ()
    archive = archive_directory(path)
    if archive.is_dir():
        stats.append(archive.stat())
    return tuple(n for item in stats for n in (item.st_ino, item.st_mtime_ns, item.st_size))


def read_key_file(path: Path) -> KeyFile:
    if not path.is_file():
        raise SigningKeyError(
            f"no signing key file at {path}: set GATEWAY_SIGNING_KEY_FILE, or run `gateway keys generate`"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SigningKeyError(f"cannot read {path} ({error.strerror or type(error).__name__})") from None
    return key_file_from_json(text, source=str(path), archive=archive_directory(path))


def signing_keys_from_json(text: str, *, source: str) -> SigningKeys:
    """Keys from GATEWAY_SIGNING_KEYS: fixed for the life of the process."""
    return SigningKeys(key_file_from_json(text, source=source))


def key_file_from_json(text: str, *, source: str, archive: Path | None = None) -> KeyFile:
    try:
        data = json.loads(text)
        keys = tuple(ECKey.import_key(item) for item in data["keys"])
        retired = {kid: _utc(moment) for kid, moment in data.get("retired", {}).items()}
        signs_from = {kid: _utc(moment) for kid, moment in data.get("signs_from", {}).items()}
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
    return KeyFile(keys, retired, signs_from, tuple(archived))


def _utc(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    if parsed.tzinfo is None:
        raise ValueError("a time without its zone")
    return parsed


def signing_keys(settings: Settings) -> SigningKeys:
    """The gateway's keys, from GATEWAY_SIGNING_KEYS if set, else from GATEWAY_SIGNING_KEY_FILE."""
    if settings.signing_keys is not None:
        return signing_keys_from_json(settings.signing_keys.get_secret_value(), source="GATEWAY_SIGNING_KEYS")
    return load_key_file(settings.signing_key_file)


def rotate_key_file(
    path: Path, *, now: datetime | None = None, signs_after: timedelta = SIGNS_AFTER
) -> tuple[ECKey, datetime, list[str]]:
    """Put a new key first, published at once and signing from `signs_after` later, when the one it
    replaces retires (its public half archived now). Drop the private halves of keys retired for
    longer than RETIREMENT. Returns the new key, when it signs from, and the kids dropped."""
    moment = now or datetime.now(UTC)
    data = read_key_file(path)
    starts = moment + signs_after
    archive = archive_directory(path)
    archive.mkdir(mode=0o700, exist_ok=True)
    retired = dict(data.retired)
    # Every key not retired by `starts` retires then: the new key takes over from all of them.
    for key in data.keys:
        kid = str(key.kid)
        if kid not in retired or retired[kid] > starts:
            (archive / f"{kid}.json").write_text(json.dumps({"keys": [_public(key)]}, indent=2))
            retired[kid] = starts
    fresh = generate_key()
    dropped = [str(key.kid) for key in data.keys if moment - retired[str(key.kid)] >= RETIREMENT]
    kept = [fresh, *(key for key in data.keys if str(key.kid) not in dropped)]
    signs_from = {kid: at for kid, at in data.signs_from.items() if kid not in dropped and at > moment}
    signs_from[str(fresh.kid)] = starts
    write_key_file(
        path,
        kept,
        retired={kid: at for kid, at in retired.items() if kid not in dropped},
        signs_from=signs_from,
    )
    return fresh, starts, dropped
