"""DPoP (RFC 9449): at the token endpoint a proof binds the token to the client's key (`cnf.jkt`); at
/graphql a bound token works only with a fresh proof by that key, for that request and that token.

Refusals: at the token endpoint 400 `invalid_dpop_proof` (or `use_dpop_nonce`); at /graphql 401
UNAUTHENTICATED with `WWW-Authenticate: DPoP ... error="..."`. With nonces on, the first proof of a
client is answered `use_dpop_nonce` with a `DPoP-Nonce` to use, and only a nonce the gateway made
in the last two minutes is accepted. In-process, on SQLite and PostgreSQL; one test over a socket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import SigningKeys, derive_key
from gateway.oauth import Nonces
from tests.conftest import REF_SECRET
from tests.gateway.oauth.conftest import (
    GRAPHQL_URL,
    ONS,
    POLICE,
    TOKEN_URL,
    TYPENAME,
    Caller,
    Enrol,
    app_with,
    event_of,
    graphql_refused,
    http_client,
    oauth_error,
    served,
)
from tests.support.identity import new_key
from tests.support.jwt_forgery import access_claims, hs256, sign, unsigned
from tests.support.partners import PURPOSE, proof

INVALID = "invalid_dpop_proof"
REALM_AND_ALGS = 'DPoP realm="partner-gateway", algs="ES256 PS256"'


def proof_claims(method: str, url: str, token: str | None = None, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if token is not None:
        claims["ath"] = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).decode().rstrip("=")
    claims.update(changes)
    return claims


def dpop_header(key: ECKey | RSAKey, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    for name, value in changes.items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def _signed(key: ECKey | RSAKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return jwt.encode(header, claims, key, algorithms=[header["alg"]], default_type=None)


def _rs256(claims: dict[str, Any]) -> str:
    key = RSAKey.generate_key(2048, private=True)
    return _signed(key, dpop_header(key, alg="RS256"), claims)


# A broken proof for a request (method, url, token): the variant name, how to make it, the reason.
Broken = Callable[[ECKey, str, str, "str | None"], str]


def _now() -> int:
    return int(time.time())


BROKEN: dict[str, tuple[Broken, str]] = {
    "for another URL": (
        lambda k, m, u, t: proof(k, m, u.replace("127.0.0.1:8000", "127.0.0.1:8001"), token=t),
        "the DPoP proof is for another URL",
    ),
    "for the URL the request was sent to, not the gateway's": (
        lambda k, m, u, t: proof(k, m, u.replace("http://127.0.0.1:8000", "http://testserver"), token=t),
        "the DPoP proof is for another URL",
    ),
    "for another path": (
        lambda k, m, u, t: proof(k, m, u.rsplit("/", 1)[0] + "/other", token=t),
        "the DPoP proof is for another URL",
    ),
    "with no htu": (
        lambda k, m, u, t: proof(k, m, u, token=t, htu=None),
        "the DPoP proof is for another URL",
    ),
    "for another method": (
        lambda k, m, u, t: proof(k, "GET", u, token=t),
        "the DPoP proof is for another method",
    ),
    "for the method in lower case": (
        lambda k, m, u, t: proof(k, m.lower(), u, token=t),
        "the DPoP proof is for another method",
    ),
    "made 100 seconds ago": (
        lambda k, m, u, t: proof(k, m, u, token=t, iat=_now() - 100),
        "the DPoP proof is not fresh (iat)",
    ),
    "made 60 seconds from now": (
        lambda k, m, u, t: proof(k, m, u, token=t, iat=_now() + 60),
        "the DPoP proof is not fresh (iat)",
    ),
    "with no iat": (
        lambda k, m, u, t: proof(k, m, u, token=t, iat=None),
        "the DPoP proof is not fresh (iat)",
    ),
    "with no jti": (lambda k, m, u, t: proof(k, m, u, token=t, jti=None), "the DPoP proof needs a jti"),
    "with a jti of 4 characters": (
        lambda k, m, u, t: proof(k, m, u, token=t, jti="abcd"),
        "the DPoP proof needs a jti",
    ),
    "typed JWT": (
        lambda k, m, u, t: _signed(k, dpop_header(k, typ="JWT"), proof_claims(m, u, t)),
        "the DPoP proof's typ must be dpop+jwt",
    ),
    "with no typ": (
        lambda k, m, u, t: _signed(k, dpop_header(k, typ=None), proof_claims(m, u, t)),
        "the DPoP proof's typ must be dpop+jwt",
    ),
    "alg none": (
        lambda k, m, u, t: unsigned(dpop_header(k), proof_claims(m, u, t)),
        "the DPoP proof must be signed with ES256 or PS256",
    ),
    "HS256 keyed with the public key": (
        lambda k, m, u, t: hs256(
            json.dumps(k.as_dict(private=False)).encode(), dpop_header(k), proof_claims(m, u, t)
        ),
        "the DPoP proof must be signed with ES256 or PS256",
    ),
    "RS256": (
        lambda k, m, u, t: _rs256(proof_claims(m, u, t)),
        "the DPoP proof must be signed with ES256 or PS256",
    ),
    "carrying the private key in its jwk": (
        lambda k, m, u, t: _signed(k, dpop_header(k, jwk=k.as_dict(private=True)), proof_claims(m, u, t)),
        "the DPoP proof's jwk must be a public key",
    ),
    "with no jwk": (
        lambda k, m, u, t: _signed(k, dpop_header(k, jwk=None), proof_claims(m, u, t)),
        "the DPoP proof's jwk must be a public key",
    ),
    "naming its key by kid": (
        lambda k, m, u, t: _signed(k, dpop_header(k, kid=k.kid), proof_claims(m, u, t)),
        "the DPoP proof must carry its key as jwk, and nothing else",
    ),
    "pointing to its key by jku": (
        lambda k, m, u, t: _signed(k, dpop_header(k, jku="http://127.0.0.1:9/jwks"), proof_claims(m, u, t)),
        "the DPoP proof must carry its key as jwk, and nothing else",
    ),
    "pointing to its key by x5u": (
        lambda k, m, u, t: _signed(k, dpop_header(k, x5u="http://127.0.0.1:9/cert"), proof_claims(m, u, t)),
        "the DPoP proof must carry its key as jwk, and nothing else",
    ),
    "an RSA jwk under ES256": (
        lambda k, m, u, t: _signed(
            k, dpop_header(k, jwk=RSAKey.generate_key(2048, private=False).as_dict()), proof_claims(m, u, t)
        ),
        "the DPoP proof's jwk does not fit its alg",
    ),
    "a P-384 jwk under ES256": (
        lambda k, m, u, t: _signed(
            k, dpop_header(k, jwk=ECKey.generate_key("P-384", private=False).as_dict()), proof_claims(m, u, t)
        ),
        "the DPoP proof's jwk does not fit its alg",
    ),
    "signed by another key than its jwk": (
        lambda k, m, u, t: _signed(new_key(), dpop_header(k), proof_claims(m, u, t)),
        "the DPoP proof's signature does not verify",
    ),
    "with its signature stripped": (
        lambda k, m, u, t: proof(k, m, u, token=t).rsplit(".", 1)[0] + ".",
        "the DPoP proof's signature does not verify",
    ),
    "with two segments": (
        lambda k, m, u, t: proof(k, m, u, token=t).rsplit(".", 1)[0],
        "the DPoP proof is malformed",
    ),
    "of garbage": (lambda k, m, u, t: "not.a.proof", "the DPoP proof is malformed"),
}

# Only at /graphql: the proof must name the access token it accompanies.
BROKEN_AT_GRAPHQL: dict[str, tuple[Broken, str]] = {
    "with no ath": (lambda k, m, u, t: proof(k, m, u), "the DPoP proof is for another access token (ath)"),
    "with the ath of another token": (
        lambda k, m, u, t: proof(k, m, u, token=(t or "") + "x"),
        "the DPoP proof is for another access token (ath)",
    ),
    "with ath in hex, not base64url": (
        lambda k, m, u, t: proof(k, m, u, ath=hashlib.sha256((t or "").encode()).hexdigest()),
        "the DPoP proof is for another access token (ath)",
    ),
}


def _challenge(response: httpx.Response) -> str:
    challenge = response.headers["www-authenticate"]
    assert isinstance(challenge, str)
    return challenge


def dpop_refused(response: httpx.Response, error: str, description: str | None = None) -> None:
    """401 at /graphql with a DPoP challenge naming the error (and no Bearer one: DPoP it must be)."""
    graphql_refused(response, 401, "UNAUTHENTICATED")
    challenge = _challenge(response)
    assert challenge.startswith(REALM_AND_ALGS + f', error="{error}"'), challenge
    if description is not None:
        assert challenge == REALM_AND_ALGS + f', error="{error}", error_description="{description}"'
    assert "Bearer" not in challenge


# -- at the token endpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize("agreement_id", [POLICE, ONS])
async def test_a_token_request_without_a_proof_is_refused_where_tokens_are_bound(
    agreement_id: str, enrol: Enrol
) -> None:
    caller = await enrol(agreement_id)
    oauth_error(await caller.token_response(dpop=False), 400, INVALID, "a DPoP proof is required")


@pytest.mark.parametrize("variant", list(BROKEN))
async def test_a_broken_proof_at_the_token_endpoint_is_invalid_dpop_proof(variant: str, ons: Caller) -> None:
    make, reason = BROKEN[variant]
    response = await ons.token_response(proof=make(ons.dpop_key, "POST", TOKEN_URL, None))
    oauth_error(response, 400, INVALID, reason)


async def test_a_proof_is_good_once_at_the_token_endpoint(ons: Caller) -> None:
    spent = ons.proof()
    assert (await ons.token_response(proof=spent)).status_code == 200
    oauth_error(await ons.token_response(proof=spent), 400, INVALID, "this DPoP proof was used before")


@pytest.mark.parametrize(
    "htu",
    [TOKEN_URL + "?x=1", TOKEN_URL + "#f", TOKEN_URL.upper().replace("/OAUTH/TOKEN", "/oauth/token")],
    ids=["with a query", "with a fragment", "scheme and host in capitals"],
)
async def test_htu_is_compared_without_query_or_fragment_and_ignoring_case_of_scheme_and_host(
    htu: str, ons: Caller
) -> None:
    response = await ons.token_response(proof=proof(ons.dpop_key, "POST", htu))
    assert response.status_code == 200, response.text


async def test_a_proof_signed_ps256_binds_the_token_to_the_rsa_key(ons: Caller, signing: SigningKeys) -> None:
    rsa = RSAKey.generate_key(2048, private=True)
    rsa_proof = _signed(rsa, dpop_header(rsa, alg="PS256"), proof_claims("POST", TOKEN_URL))
    token = await ons.token(proof=rsa_proof)
    claims = jwt.decode(token, signing.verification, algorithms=["ES256"]).claims
    assert claims["cnf"] == {"jkt": rsa.thumbprint()}
    graphql = _signed(rsa, dpop_header(rsa, alg="PS256"), proof_claims("POST", GRAPHQL_URL, token))
    served(await ons.graphql(token, purpose=False, headers={"DPoP": graphql}))


async def test_a_proof_with_a_fractional_iat_is_accepted(ons: Caller) -> None:
    response = await ons.token_response(proof=proof(ons.dpop_key, "POST", TOKEN_URL, iat=time.time()))
    assert response.status_code == 200, response.text


# -- at /graphql -----------------------------------------------------------------------------------------


async def test_a_bound_token_sent_as_bearer_is_refused(police: Caller) -> None:
    token = await police.token()
    for headers in (
        {"Authorization": f"Bearer {token}"},
        police.bound(token, scheme="Bearer"),  # with its proof, even
    ):
        response = await police.http.post("/graphql", json=TYPENAME, headers={**headers, **PURPOSE})
        graphql_refused(response, 401, "UNAUTHENTICATED")
        challenge = _challenge(response)
        details = 'error="invalid_token", error_description="the scheme does not fit the token\'s binding"'
        assert challenge == f'{REALM_AND_ALGS}, {details}, Bearer realm="partner-gateway", {details}'


async def test_a_bound_token_without_a_proof_is_refused(police: Caller) -> None:
    token = await police.token()
    response = await police.http.post(
        "/graphql", json=TYPENAME, headers={"Authorization": f"DPoP {token}", **PURPOSE}
    )
    dpop_refused(response, INVALID, "a DPoP proof is required")
    assert response.json()["errors"][0]["message"] == "The DPoP proof is not valid."
    assert "dpop-nonce" not in response.headers  # nonces are off in these settings


async def test_a_stolen_token_with_the_thiefs_own_proof_is_refused(
    police: Caller, engine: AsyncEngine
) -> None:
    token = await police.token()
    thief = new_key()
    response = await police.graphql(token, headers={"DPoP": proof(thief, "POST", GRAPHQL_URL, token=token)})
    dpop_refused(response, INVALID, "the proof is by another key than the token's")
    event = await event_of(engine, response)
    assert (event["outcome"], event["http_status"], event["error_code"]) == ("denied", 401, "UNAUTHENTICATED")
    assert event["people_count"] == 0


async def test_a_proof_is_good_once_at_graphql(police: Caller) -> None:
    token = await police.token()
    headers = police.bound(token)
    served(await police.graphql(token, headers=headers))
    dpop_refused(await police.graphql(token, headers=headers), INVALID, "this DPoP proof was used before")


async def test_a_proof_spent_at_the_token_endpoint_cannot_be_spent_at_graphql(police: Caller) -> None:
    """A proof names its URL, so it cannot be moved; and even the jti is spent for the key."""
    spent = police.proof("POST", GRAPHQL_URL)  # htu of /graphql, sent to the token endpoint
    oauth_error(await police.token_response(proof=spent), 400, INVALID, "the DPoP proof is for another URL")


@pytest.mark.parametrize("variant", [*BROKEN, *BROKEN_AT_GRAPHQL])
async def test_a_broken_proof_at_graphql_is_refused_with_a_dpop_challenge(
    variant: str, police: Caller
) -> None:
    token = await police.token()
    make, reason = {**BROKEN, **BROKEN_AT_GRAPHQL}[variant]
    response = await police.graphql(
        token, headers={"DPoP": make(police.dpop_key, "POST", GRAPHQL_URL, token)}
    )
    dpop_refused(response, INVALID, reason)


async def test_a_proof_for_one_token_does_not_serve_another_of_the_same_key(police: Caller) -> None:
    first, second = await police.token(), await police.token()
    response = await police.graphql(
        second, headers={"DPoP": proof(police.dpop_key, "POST", GRAPHQL_URL, token=first)}
    )
    dpop_refused(response, INVALID, "the DPoP proof is for another access token (ath)")


async def test_a_proof_within_the_leeway_is_accepted(police: Caller, settings: Settings) -> None:
    token = await police.token()
    leeway = settings.token_leeway_seconds
    for iat in (_now() - 60 - leeway + 5, _now() + leeway - 5):
        served(
            await police.graphql(
                token, headers={"DPoP": proof(police.dpop_key, "POST", GRAPHQL_URL, token=token, iat=iat)}
            )
        )


async def test_an_unbound_token_is_refused_where_the_agreement_binds_tokens(
    police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    """A token without cnf, even signed by the gateway, is no use to an agreement with dpop."""
    assert police.issuer is not None
    act = {"sub": PURPOSE["X-Acting-User"], "iss": police.issuer.issuer}
    unbound = sign(signing.active, access_claims(settings, police.client_id, POLICE, act=act))
    response = await police.http.post(
        "/graphql", json=TYPENAME, headers={"Authorization": f"Bearer {unbound}", **PURPOSE}
    )
    graphql_refused(response, 401, "UNAUTHENTICATED")
    assert 'error_description="this agreement\'s tokens are DPoP-bound"' in _challenge(response)
    as_dpop = await police.graphql(unbound)  # the DPoP scheme for a token that is not bound
    graphql_refused(as_dpop, 401, "UNAUTHENTICATED")
    assert 'error_description="the scheme does not fit the token\'s binding"' in _challenge(as_dpop)


# -- nonces ------------------------------------------------------------------------------------------------


def nonces() -> Nonces:
    return Nonces(derive_key(REF_SECRET, "dpop-nonce"))


@pytest.fixture
async def nonce_http(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with(settings, engine, signing, dpop_nonce=True) as app, http_client(app) as http:
        yield http


async def test_with_nonces_the_first_token_request_is_told_the_nonce_and_the_retry_succeeds(
    nonce_http: httpx.AsyncClient, enrol: Enrol
) -> None:
    caller = await enrol(POLICE, http=nonce_http)
    first = await caller.token_response()
    oauth_error(first, 400, "use_dpop_nonce", "use the DPoP-Nonce this answer carries")
    nonce = first.headers["dpop-nonce"]
    assert nonces().is_fresh(nonce)
    retried = await caller.token_response(
        caller.form(), proof=proof(caller.dpop_key, "POST", TOKEN_URL, nonce=nonce)
    )
    assert retried.status_code == 200, retried.text
    assert nonces().is_fresh(retried.headers["dpop-nonce"])


async def test_with_nonces_graphql_asks_for_one_and_serves_the_retry(
    nonce_http: httpx.AsyncClient, enrol: Enrol
) -> None:
    caller = await enrol(POLICE, http=nonce_http)
    await caller.token_response()  # learns the nonce
    token = await caller.token()
    without = await caller.graphql(
        token, headers={"DPoP": proof(caller.dpop_key, "POST", GRAPHQL_URL, token=token)}
    )
    dpop_refused(without, "use_dpop_nonce", "use the DPoP-Nonce this answer carries")
    assert (
        without.json()["errors"][0]["message"]
        == "Send the request again with a DPoP proof that uses the new nonce."
    )
    nonce = without.headers["dpop-nonce"]
    assert nonces().is_fresh(nonce)
    retried = await caller.graphql(
        token, headers={"DPoP": proof(caller.dpop_key, "POST", GRAPHQL_URL, token=token, nonce=nonce)}
    )
    served(retried)
    assert nonces().is_fresh(retried.headers["dpop-nonce"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _made_up(now: float) -> dict[str, str]:
    window = int(now // 60)
    other = Nonces(b"another gateway's nonce key, 32+ bytes long").current(now)
    return {
        "random text": secrets.token_urlsafe(16),
        "this window with a made-up MAC": f"{window}.{_b64(secrets.token_bytes(16))}",
        "another gateway's nonce": other,
        "two windows old": nonces().current(now - 125),
        "from a window in the future": nonces().current(now + 120),
        "empty": "",
    }


@pytest.mark.parametrize("variant", list(_made_up(0)))
async def test_with_nonces_a_made_up_or_expired_nonce_is_refused_at_both_endpoints(
    variant: str, nonce_http: httpx.AsyncClient, enrol: Enrol
) -> None:
    caller = await enrol(POLICE, http=nonce_http)
    bad = _made_up(time.time())[variant]
    at_token = await caller.token_response(proof=proof(caller.dpop_key, "POST", TOKEN_URL, nonce=bad))
    oauth_error(at_token, 400, "use_dpop_nonce")
    assert at_token.headers["dpop-nonce"] != bad

    caller.nonce = at_token.headers["dpop-nonce"]
    token = await caller.token()
    at_graphql = await caller.graphql(
        token, headers={"DPoP": proof(caller.dpop_key, "POST", GRAPHQL_URL, token=token, nonce=bad)}
    )
    dpop_refused(at_graphql, "use_dpop_nonce")
    assert at_graphql.headers["dpop-nonce"] != bad


async def test_with_nonces_the_previous_windows_nonce_is_still_good(
    nonce_http: httpx.AsyncClient, enrol: Enrol
) -> None:
    caller = await enrol(ONS, http=nonce_http)
    if time.time() % 60 > 58:  # the window is about to end: the previous one would be two old
        await asyncio.sleep(2.5)
    previous = nonces().current(time.time() - 60)
    response = await caller.token_response(proof=proof(caller.dpop_key, "POST", TOKEN_URL, nonce=previous))
    assert response.status_code == 200, response.text


async def test_with_nonces_a_broken_proof_is_still_invalid_and_carries_a_nonce(
    nonce_http: httpx.AsyncClient, enrol: Enrol
) -> None:
    caller = await enrol(ONS, http=nonce_http)
    response = await caller.token_response(
        proof=proof(caller.dpop_key, "GET", TOKEN_URL, nonce=nonces().current())
    )
    oauth_error(response, 400, INVALID, "the DPoP proof is for another method")
    assert nonces().is_fresh(response.headers["dpop-nonce"])


# -- over a socket --------------------------------------------------------------------------------------


async def test_over_a_socket_the_proofs_name_the_configured_urls_not_the_socket(
    http: httpx.AsyncClient, enrol: Enrol
) -> None:
    caller = await enrol(POLICE, http=http)
    token = await caller.token()
    served(await caller.graphql(token))
    socket_url = str(http.base_url).rstrip("/") + "/graphql"
    wrong = await caller.graphql(
        token, headers={"DPoP": proof(caller.dpop_key, "POST", socket_url, token=token)}
    )
    assert socket_url != GRAPHQL_URL
    dpop_refused(wrong, INVALID, "the DPoP proof is for another URL")
