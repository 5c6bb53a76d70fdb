"""Per-partner opaque references for people, families and page cursors.

A ref is the internal id encrypted with AES-SIV under a key derived from the gateway's secret and
the partner's agreement id. SIV is deterministic, so the same person always has the same ref for
one partner; different keys make refs unlinkable across partners; the authentication tag means a
ref that was altered, invented or issued to another partner does not decode at all. Only the
gateway, which holds the secret, can turn a ref back into an id.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from enum import Enum
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_BYTES: Final = 32
_ID = struct.Struct(">Q")
# base64url of 8 bytes of id + 16 bytes of SIV tag, unpadded. Checked exactly, because the decoder
# would also accept '+' and '/' and so give one ref several spellings.
_BODY: Final = re.compile(r"[A-Za-z0-9_-]{32}")


class RefKind(Enum):
    PERSON = "per"
    FAMILY = "fam"
    CURSOR = "cur"


# Refs kept per codec once made: a partner paging through a cohort is sent the same people again.
REFS_CACHED: Final = 32_768  # about 9 MB per codec when full


class RefCodec:
    """Encodes and decodes refs for one partner. Encoding is deterministic, so refs once made are
    kept (at most REFS_CACHED per codec, least recently used dropped first)."""

    __slots__ = ("_encoded", "_siv")

    def __init__(self, secret: bytes, partner: str) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the ref secret must be at least {MIN_SECRET_BYTES} bytes")
        key = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=b"partner-gateway/ref/v1", info=partner.encode()
        ).derive(secret)
        self._siv = AESSIV(key)
        self._encoded = lru_cache(maxsize=REFS_CACHED)(self._seal)

    def encode(self, kind: RefKind, internal_id: int) -> str:
        return self._encoded(kind, internal_id)

    def _seal(self, kind: RefKind, internal_id: int) -> str:
        sealed = self._siv.encrypt(_ID.pack(internal_id), [kind.value.encode()])
        return f"{kind.value}_{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode()}"

    def decode(self, kind: RefKind, ref: str) -> int | None:
        """The internal id, or None for anything that is not a ref this partner was given."""
        prefix, _, body = ref.partition("_")
        if prefix != kind.value or not _BODY.fullmatch(body):
            return None
        try:
            sealed = base64.urlsafe_b64decode(body + "=")
            (internal_id,) = _ID.unpack(self._siv.decrypt(sealed, [kind.value.encode()]))
        except (InvalidTag, binascii.Error, ValueError, struct.error):
            return None
        return int(internal_id)
