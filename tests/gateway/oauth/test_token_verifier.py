"""The token verifier keeps a token it has verified, and gives it up as soon as it would refuse it:
when it expires (past the leeway) or when the key that signed it is no longer published."""

from __future__ import annotations

import time

import pytest

from gateway.keys import KeyFile, SigningKeys, generate_key
from gateway.oauth import InvalidTokenError, TokenIssuer, TokenVerifier

ISSUER, AUDIENCE = "https://gateway.example", "urn:council:partner-gateway"


def test_a_kept_token_is_refused_once_its_key_is_no_longer_published() -> None:
    signer, other = generate_key(), generate_key()
    published = [KeyFile((signer,), {}, {}, ())]
    keys = SigningKeys(published[0], reread=lambda: published[0], refresh_seconds=0)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=0)
    token = TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, ttl=300).issue(client_id="c", scope="a")
    assert verifier.verify(token.token).client_id == "c"
    assert verifier.verify(token.token).client_id == "c", "kept, and still good"
    published[0] = KeyFile((other,), {}, {}, ())  # the signing key withdrawn
    with pytest.raises(InvalidTokenError, match="not signed by a key the gateway publishes"):
        verifier.verify(token.token)


def test_a_kept_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = SigningKeys.from_keys([generate_key()])
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=5)
    token = TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, ttl=60).issue(client_id="c", scope="a")
    assert verifier.verify(token.token).client_id == "c"
    issued = time.time()
    monkeypatch.setattr(time, "time", lambda: issued + 60 + 4)  # within the leeway: still good
    assert verifier.verify(token.token).client_id == "c"
    monkeypatch.setattr(time, "time", lambda: issued + 60 + 7)
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(token.token)
