"""Client authentication at the token endpoint: private_key_jwt (RFC 7523) and, only where an
agreement allows it, client_secret_basic.

Every failure is `invalid_client` with status 401. What depends only on the assertion itself (its
algorithm, headers, audience, times) is explained; everything that depends on the client (unknown,
disabled, the wrong key or a bad signature, a method its agreement forbids) is the one answer
"client authentication failed", byte for byte the same, so that nobody can learn which clients exist.
A client assertion is good once, and failures are counted per client id and per address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.config import Settings
from gateway.keys import SigningKeys
from gateway.oauth import add_client, disable_client, replace_keys
from policies import Agreement, load_agreements
from tests.conftest import ISSUER
from tests.gateway.oauth.conftest import (
    ASSERTION_TYPE,
    FAILED,
    ONS,
    SANDBOX,
    TOKEN_URL,
    Caller,
    Enrol,
    app_with,
    claims_of,
    http_client,
    new_address,
    oauth_error,
)
from tests.support.identity import jwks, new_key
from tests.support.jwt_forgery import hs256, unsigned

SHAPE = "the assertion needs a kid and one of ES256, PS256"
CARRIES_KEY = "the assertion carries or points to a key: only registered keys are used"
AUDIENCE = "aud must be exactly one of the token endpoint or the issuer"
NAMES = "iss and sub must both be the client id"
NOT_YET = "the assertion is not valid yet"


def assertion_claims(client_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id, "sub": client_id, "aud": TOKEN_URL, "iat": now, "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }  # fmt: skip
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def signed(key: ECKey | RSAKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return jwt.encode(header, claims, key, algorithms=[header["alg"]], default_type=None)


def stranger() -> ECKey:
    return new_key()


def _by_stranger(caller: Caller, *, carried: bool) -> str:
    """Signed by a key the client never registered: under the client's kid with the key in `jwk`
    (`carried`), or under the stranger's own kid."""
    key = stranger()
    header: dict[str, Any] = {"alg": "ES256", "kid": key.kid}
    if carried:
        header = {"alg": "ES256", "kid": caller.key.kid, "jwk": key.as_dict(private=False)}
    return signed(key, header, assertion_claims(caller.client_id))


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWS with exactly this header and no signature (joserfc rightly will not make one)."""
    return f"{_segment(header)}.{_segment(claims)}."


def _flip_last_signature_character(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def _with_claims(token: str, claims: dict[str, Any]) -> str:
    head, _, signature = token.split(".")
    return f"{head}.{_segment(claims)}.{signature}"


# Explained: these depend on the assertion alone, and would be answered the same for any client id.
EXPLAINED: dict[str, tuple[Callable[[Caller], str], str]] = {
    "alg none": (
        lambda c: unsigned({"kid": c.key.kid, "typ": "JWT"}, assertion_claims(c.client_id)),
        SHAPE,
    ),
    "alg None, capitalised": (
        lambda c: _unsigned({"alg": "None", "kid": c.key.kid}, assertion_claims(c.client_id)),
        SHAPE,
    ),
    "no alg": (lambda c: _unsigned({"kid": c.key.kid}, assertion_claims(c.client_id)), SHAPE),
    "HS256 keyed with the registered public key (PEM)": (
        lambda c: hs256(c.key.as_pem(private=False), {"kid": c.key.kid}, assertion_claims(c.client_id)),
        SHAPE,
    ),
    "HS256 keyed with the registered public key (JWK)": (
        lambda c: hs256(
            json.dumps(c.key.as_dict(private=False)).encode(),
            {"kid": c.key.kid},
            assertion_claims(c.client_id),
        ),
        SHAPE,
    ),
    "ES512 instead of ES256": (
        lambda c: signed(
            ECKey.generate_key("P-521", private=True),
            {"alg": "ES512", "kid": c.key.kid},
            assertion_claims(c.client_id),
        ),
        SHAPE,
    ),
    "no kid": (lambda c: c.assertion(header={"alg": "ES256", "typ": "JWT"}), SHAPE),
    "jwk header carrying the attacker's key": (
        lambda c: _by_stranger(c, carried=True),
        CARRIES_KEY,
    ),
    "jwk header carrying the registered key": (
        lambda c: c.assertion(header={"alg": "ES256", "kid": c.key.kid, "jwk": c.key.as_dict(private=False)}),
        CARRIES_KEY,
    ),
    "jku header": (
        lambda c: c.assertion(
            header={"alg": "ES256", "kid": c.key.kid, "jku": "http://127.0.0.1:9/jwks.json"}
        ),
        CARRIES_KEY,
    ),
    "x5u header": (
        lambda c: c.assertion(
            header={"alg": "ES256", "kid": c.key.kid, "x5u": "http://127.0.0.1:9/cert.pem"}
        ),
        CARRIES_KEY,
    ),
    "x5c header": (
        lambda c: c.assertion(
            header={"alg": "ES256", "kid": c.key.kid, "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"]}
        ),
        CARRIES_KEY,
    ),
    "expired": (
        lambda c: c.assertion(iat=int(time.time()) - 400, exp=int(time.time()) - 100),
        "the assertion has expired",
    ),
    "iat in the future": (
        lambda c: c.assertion(iat=int(time.time()) + 120, exp=int(time.time()) + 180),
        NOT_YET,
    ),
    "nbf in the future": (lambda c: c.assertion(nbf=int(time.time()) + 120), NOT_YET),
    "lives 301 seconds": (
        lambda c: c.assertion(iat=int(time.time()), exp=int(time.time()) + 301),
        "the assertion may live at most five minutes",
    ),
    "lives a day": (
        lambda c: c.assertion(iat=int(time.time()) - 10, exp=int(time.time()) + 86_400),
        "the assertion may live at most five minutes",
    ),
    "no iat": (lambda c: c.assertion(iat=None), "the assertion needs iat and exp (NumericDate)"),
    "no exp": (lambda c: c.assertion(exp=None), "the assertion needs iat and exp (NumericDate)"),
    "exp as a string": (
        lambda c: c.assertion(exp=str(int(time.time()) + 60)),
        "the assertion needs iat and exp (NumericDate)",
    ),
    "aud is /graphql": (lambda c: c.assertion(aud=ISSUER + "/graphql"), AUDIENCE),
    "aud is another server's token endpoint": (
        lambda c: c.assertion(aud="https://login.met-police.example/token"),
        AUDIENCE,
    ),
    "aud is the token URL with a trailing slash": (lambda c: c.assertion(aud=TOKEN_URL + "/"), AUDIENCE),
    "no aud": (lambda c: c.assertion(aud=None), AUDIENCE),
    "aud array of the two audiences": (lambda c: c.assertion(aud=[TOKEN_URL, ISSUER]), AUDIENCE),
    "aud array with another server": (
        lambda c: c.assertion(aud=[TOKEN_URL, "https://evil.example"]),
        AUDIENCE,
    ),
    "empty aud array": (lambda c: c.assertion(aud=[]), AUDIENCE),
    "iss is another client": (lambda c: c.assertion(iss=c.client_id + "x"), NAMES),
    "iss is the partner's identity provider": (
        lambda c: c.assertion(iss="https://login.met-police.example"),
        NAMES,
    ),
    "no iss": (lambda c: c.assertion(iss=None), NAMES),
    "no sub": (lambda c: c.assertion(sub=None), NAMES),
    "SQL in iss and sub": (lambda c: c.assertion(iss="x' OR '1'='1", sub="x' OR '1'='1"), NAMES),
    "a path as iss and sub": (lambda c: c.assertion(iss="../../clients", sub="../../clients"), NAMES),
    "no jti": (lambda c: c.assertion(jti=None), "the assertion needs a jti"),
    "a jti of 7 characters": (lambda c: c.assertion(jti="1234567"), "the assertion needs a jti"),
    "two segments": (lambda c: c.assertion().rsplit(".", 1)[0], "the client assertion is malformed"),
    "not base64": (lambda c: "!!!.@@@.###", "the client assertion is malformed"),
    "over 4096 characters": (lambda c: c.assertion(pad="x" * 4096), "the client assertion is malformed"),
}

# Uniform: these depend on the client, and must not say how.
UNIFORM: dict[str, Callable[[Caller], str]] = {
    "an unknown kid": lambda c: c.assertion(header={"alg": "ES256", "kid": "no-such-key"}),
    "a path as kid": lambda c: c.assertion(header={"alg": "ES256", "kid": "../../../../etc/passwd"}),
    "SQL as kid": lambda c: c.assertion(header={"alg": "ES256", "kid": "x' OR '1'='1' --"}),
    "an empty kid": lambda c: c.assertion(header={"alg": "ES256", "kid": ""}),
    "PS256 under the registered EC kid": lambda c: signed(
        RSAKey.generate_key(2048, private=True),
        {"alg": "PS256", "kid": c.key.kid},
        assertion_claims(c.client_id),
    ),
    "signature stripped": lambda c: c.assertion().rsplit(".", 1)[0] + ".",
    "signature altered": lambda c: _flip_last_signature_character(c.assertion()),
    "claims altered after signing": lambda c: _with_claims(
        c.assertion(), assertion_claims(c.client_id, exp=int(time.time()) + 120)
    ),
    "a stranger's key under the registered kid": lambda c: signed(
        stranger(), {"alg": "ES256", "kid": c.key.kid}, assertion_claims(c.client_id)
    ),
    "a stranger's key under its own kid": lambda c: _by_stranger(c, carried=False),
}


def _answer(response: httpx.Response) -> tuple[int, Any, str | None]:
    return response.status_code, response.json(), response.headers.get("www-authenticate")


# -- what is explained -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(EXPLAINED))
async def test_an_assertion_of_the_wrong_shape_is_invalid_client_with_its_reason(
    variant: str, ons: Caller, signing: SigningKeys
) -> None:
    make, reason = EXPLAINED[variant]
    response = await ons.token_response(ons.form(client_assertion=make(ons)))
    oauth_error(response, 401, "invalid_client", reason)
    assert response.headers["www-authenticate"] == 'Basic realm="partner-gateway"'
    assert ons.client_id not in response.text


@pytest.mark.parametrize("variant", ["expired", "jku header", "aud is /graphql", "alg none"])
async def test_an_explained_refusal_is_the_same_for_a_client_that_does_not_exist(
    variant: str, ons: Caller
) -> None:
    ghost = Caller(ons.http, ONS, "ons-evaluation-000000000000", new_key(), new_key())
    make, _ = EXPLAINED[variant]
    real = await ons.token_response(ons.form(client_assertion=make(ons)))
    unknown = await ghost.token_response(ghost.form(client_assertion=make(ghost)))
    assert _answer(real) == _answer(unknown)


async def test_an_assertion_type_other_than_jwt_bearer_is_refused(ons: Caller) -> None:
    for assertion_type in ("urn:ietf:params:oauth:client-assertion-type:saml2-bearer", "", None):
        response = await ons.token_response(ons.form(client_assertion_type=assertion_type))
        oauth_error(response, 401, "invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")


async def test_a_client_id_parameter_that_differs_from_the_assertion_is_refused(
    ons: Caller, police: Caller
) -> None:
    response = await ons.token_response({**ons.form(), "client_id": police.client_id})
    oauth_error(response, 401, "invalid_client", "client_id differs from the assertion's")
    matching = await ons.token_response({**ons.form(), "client_id": ons.client_id})
    assert matching.status_code == 200, matching.text


async def test_no_client_authentication_at_all_is_invalid_client(ons: Caller) -> None:
    response = await ons.token_response(ons.form(client_assertion=None, client_assertion_type=None))
    oauth_error(response, 401, "invalid_client", "client authentication is required (private_key_jwt)")
    assert response.headers["www-authenticate"] == 'Basic realm="partner-gateway"'


# -- what is not -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(UNIFORM))
async def test_an_assertion_that_does_not_verify_gets_the_one_uniform_answer(
    variant: str, enrol: Enrol, engine: AsyncEngine
) -> None:
    ons = await enrol(ONS)  # a client of its own: each failure counts against it
    response = await ons.token_response(ons.form(client_assertion=UNIFORM[variant](ons)))
    oauth_error(response, 401, "invalid_client", FAILED)
    assert response.headers["www-authenticate"] == 'Basic realm="partner-gateway"'
    assert response.json() == {"error": "invalid_client", "error_description": FAILED}


async def test_unknown_disabled_and_impostor_clients_are_indistinguishable(
    enrol: Enrol, engine: AsyncEngine
) -> None:
    real, disabled, victim = await enrol(ONS), await enrol(ONS), await enrol(ONS)
    async with engine.begin() as conn:
        await disable_client(conn, disabled.client_id)
    impostor = Caller(victim.http, ONS, victim.client_id, new_key(), new_key())
    ghost = Caller(real.http, ONS, "ons-evaluation-ffffffffffff", new_key(), new_key())
    other_client_key = Caller(real.http, ONS, victim.client_id, real.key, new_key())  # another client's key

    answers = [
        _answer(await caller.token_response()) for caller in (disabled, impostor, ghost, other_client_key)
    ]
    assert answers[0][0] == 401
    assert answers[0][1] == {"error": "invalid_client", "error_description": FAILED}
    assert all(answer == answers[0] for answer in answers), answers
    assert (await real.token_response()).status_code == 200  # the control


async def test_a_disabled_client_gets_no_token_even_with_its_own_key(
    police: Caller, engine: AsyncEngine
) -> None:
    assert (await police.token_response()).status_code == 200
    async with engine.begin() as conn:
        await disable_client(conn, police.client_id)
    oauth_error(await police.token_response(), 401, "invalid_client", FAILED)


# -- replay ------------------------------------------------------------------------------------------------


async def test_an_assertion_is_good_once(ons: Caller) -> None:
    form = ons.form()
    first = await ons.token_response(form)
    assert first.status_code == 200, first.text
    again = await ons.token_response(form)  # the same assertion, with a fresh DPoP proof
    oauth_error(again, 401, "invalid_client", "this client assertion was used before")


async def test_a_new_assertion_reusing_a_jti_is_refused(ons: Caller) -> None:
    jti = secrets.token_urlsafe(16)
    assert (await ons.token_response(ons.form(client_assertion=ons.assertion(jti=jti)))).status_code == 200
    reused = ons.assertion(jti=jti, iat=int(time.time()) - 1, exp=int(time.time()) + 120)
    oauth_error(await ons.token_response(ons.form(client_assertion=reused)), 401, "invalid_client")


async def test_an_assertion_spent_at_introspection_cannot_be_replayed_at_the_token_endpoint(
    ons: Caller,
) -> None:
    token = await ons.token()
    assertion = ons.assertion()
    introspected = await ons.post_form(
        "/oauth/introspect",
        {"token": token, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion},
    )
    assert introspected.status_code == 200 and introspected.json()["active"] is True
    replayed = await ons.token_response(ons.form(client_assertion=assertion))
    oauth_error(replayed, 401, "invalid_client", "this client assertion was used before")


async def test_the_same_jti_from_two_clients_is_two_assertions(enrol: Enrol) -> None:
    """The replay guard is per client: one client's jti cannot lock another out."""
    first, second = await enrol(ONS), await enrol(ONS)
    jti = secrets.token_urlsafe(16)
    for caller in (first, second):
        response = await caller.token_response(caller.form(client_assertion=caller.assertion(jti=jti)))
        assert response.status_code == 200, response.text


# -- what is accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aud",
    [TOKEN_URL, ISSUER, [TOKEN_URL], [ISSUER]],
    ids=["token endpoint", "issuer", "[token endpoint]", "[issuer]"],
)
async def test_the_audience_may_be_the_token_endpoint_or_the_issuer(aud: Any, ons: Caller) -> None:
    response = await ons.token_response(ons.form(client_assertion=ons.assertion(aud=aud)))
    assert response.status_code == 200, response.text


async def test_an_assertion_within_the_leeway_is_accepted(ons: Caller, settings: Settings) -> None:
    now, leeway = int(time.time()), settings.token_leeway_seconds
    lagging = ons.assertion(iat=now - 300 + 5, exp=now - leeway + 5)  # just expired, within the leeway
    assert (await ons.token_response(ons.form(client_assertion=lagging))).status_code == 200
    ahead = ons.assertion(iat=now + leeway - 5, exp=now + leeway + 55)  # the client's clock runs fast
    assert (await ons.token_response(ons.form(client_assertion=ahead))).status_code == 200


async def test_an_assertion_with_fractional_times_is_accepted(ons: Caller) -> None:
    now = time.time()
    response = await ons.token_response(ons.form(client_assertion=ons.assertion(iat=now, exp=now + 60.5)))
    assert response.status_code == 200, response.text


async def test_a_client_with_several_keys_may_sign_with_any_and_a_replaced_key_stops_working(
    engine: AsyncEngine, agreements: dict[str, Agreement], web: httpx.AsyncClient
) -> None:
    first, second, third = new_key(), new_key(), new_key()
    async with engine.begin() as conn:
        made = await add_client(
            conn, agreement_id=ONS, known_agreements=set(agreements), jwks=jwks(first, second)
        )
    client_id = made.record.client_id
    for key in (first, second):
        assert (await Caller(web, ONS, client_id, key, new_key()).token_response()).status_code == 200
    async with engine.begin() as conn:
        await replace_keys(conn, client_id, jwks(third))  # the partner rotated its keys
    oauth_error(
        await Caller(web, ONS, client_id, first, new_key()).token_response(), 401, "invalid_client", FAILED
    )
    assert (await Caller(web, ONS, client_id, third, new_key()).token_response()).status_code == 200


async def test_a_client_with_an_rsa_key_signs_ps256_and_never_rs256(
    engine: AsyncEngine, agreements: dict[str, Agreement], web: httpx.AsyncClient
) -> None:
    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "rsa-1"})
    public = {**key.as_dict(private=False), "kid": "rsa-1", "alg": "PS256"}
    async with engine.begin() as conn:
        made = await add_client(
            conn, agreement_id=ONS, known_agreements=set(agreements), jwks={"keys": [public]}
        )
    caller = Caller(web, ONS, made.record.client_id, new_key(), new_key())
    claims = assertion_claims(caller.client_id)
    ps256 = signed(key, {"alg": "PS256", "kid": "rsa-1"}, claims)
    assert (await caller.token_response(caller.form(client_assertion=ps256))).status_code == 200
    rs256 = signed(key, {"alg": "RS256", "kid": "rsa-1"}, assertion_claims(caller.client_id))
    oauth_error(
        await caller.token_response(caller.form(client_assertion=rs256)), 401, "invalid_client", SHAPE
    )


# -- client_secret_basic -------------------------------------------------------------------------------


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def test_a_secret_is_refused_where_the_agreement_requires_private_key_jwt(
    engine: AsyncEngine, agreements: dict[str, Agreement], web: httpx.AsyncClient
) -> None:
    async with engine.begin() as conn:  # a secret it should never have been given
        made = await add_client(
            conn, agreement_id=ONS, known_agreements=set(agreements), jwks=jwks(new_key()), with_secret=True
        )
    assert made.secret is not None
    caller = Caller(web, ONS, made.record.client_id, new_key(), new_key())
    response = await caller.token_response(
        {"grant_type": "client_credentials"}, headers=_basic(made.record.client_id, made.secret)
    )
    oauth_error(response, 401, "invalid_client", FAILED)
    assert response.headers["www-authenticate"] == 'Basic realm="partner-gateway"'


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"client:").decode(),
        "Basic " + base64.b64encode(b"../etc:secret").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:secret").decode(),
    ],
    ids=[
        "nothing after the scheme",
        "not base64",
        "no colon",
        "empty secret",
        "a path as client id",
        "not utf-8",
    ],
)
async def test_unreadable_basic_credentials_are_invalid_client(authorization: str, ons: Caller) -> None:
    response = await ons.token_response(
        {"grant_type": "client_credentials"}, headers={"Authorization": authorization}
    )
    oauth_error(response, 401, "invalid_client", "the client credentials cannot be read")


@pytest.mark.parametrize("authorization", ["Bearer abc", "Digest x", "DPoP abc", "Basic"])
async def test_another_scheme_is_no_client_authentication(authorization: str, ons: Caller) -> None:
    response = await ons.token_response(
        {"grant_type": "client_credentials"}, headers={"Authorization": authorization}
    )
    oauth_error(response, 401, "invalid_client", "client authentication is required (private_key_jwt)")


async def test_in_a_sandbox_agreement_that_allows_it_a_secret_authenticates_and_nothing_else_does(
    settings: Settings,
    engine: AsyncEngine,
    signing: SigningKeys,
    sandbox_dir: Path,
) -> None:
    sandbox = load_agreements(sandbox_dir)
    async with engine.begin() as conn:
        made = await add_client(
            conn, agreement_id=SANDBOX, known_agreements=set(sandbox), jwks=jwks(new_key()), with_secret=True
        )
        other = await add_client(conn, agreement_id=SANDBOX, known_agreements=set(sandbox), with_secret=True)
    assert made.secret is not None and other.secret is not None
    client_id = made.record.client_id
    async with (
        app_with(settings, engine, signing, agreements_dir=sandbox_dir) as app,
        http_client(app) as http,
    ):
        caller = Caller(http, SANDBOX, client_id, new_key(), new_key())
        grant = {"grant_type": "client_credentials"}
        ok = await caller.token_response(grant, dpop=False, headers=_basic(client_id, made.secret))
        assert ok.status_code == 200, ok.text
        assert ok.json()["token_type"] == "Bearer"
        assert claims_of(ok.json()["access_token"], signing)["client_id"] == client_id

        refusals = [
            await caller.token_response(grant, dpop=False, headers=_basic(client_id, made.secret + "x")),
            await caller.token_response(grant, dpop=False, headers=_basic(client_id, other.secret)),
            await caller.token_response(
                grant, dpop=False, headers=_basic("dev-sandbox-000000000000", made.secret)
            ),
        ]
        for refused in refusals:
            oauth_error(refused, 401, "invalid_client", FAILED)
        assert len({json.dumps(_answer(refused)) for refused in refusals}) == 1


# -- throttling ------------------------------------------------------------------------------------------


async def _within_one_window(attempt: Callable[[], Awaitable[None]]) -> None:
    """Failures are counted in fixed one-minute windows: run again if a window ended meanwhile."""
    for _ in range(3):
        window = int(time.time()) // 60
        try:
            await attempt()
        except AssertionError:
            if int(time.time()) // 60 == window:
                raise
            continue  # the count started again mid-way: try again, in the new window
        if int(time.time()) // 60 == window:
            return
    raise AssertionError("three windows ended during the attempts")


async def test_past_ten_failures_for_a_client_id_failures_are_throttled_but_the_genuine_client_is_not(
    app: Starlette, enrol: Enrol
) -> None:
    """Anyone can claim a client id: failures in its name must not shut the real partner out."""

    async def attempt() -> None:
        victim = await enrol(ONS)
        async with http_client(app, new_address()) as elsewhere:  # under the address limit throughout
            attacker = Caller(elsewhere, ONS, victim.client_id, new_key(), new_key())
            for _ in range(10):
                oauth_error(await attacker.token_response(), 401, "invalid_client", FAILED)
            for _ in range(3):
                throttled = await attacker.token_response()
                oauth_error(
                    throttled,
                    429,
                    "temporarily_unavailable",
                    "too many failed attempts: try again in a minute",
                )
                assert throttled.headers["retry-after"] == "60"
            assert (await victim.token_response()).status_code == 200, (
                "the genuine client, with its genuine key"
            )
            ghost = Caller(elsewhere, ONS, f"ons-evaluation-{secrets.token_hex(6)}", new_key(), new_key())
            for _ in range(10):  # an id nobody registered is throttled alike: a 429 tells nothing
                oauth_error(await ghost.token_response(), 401, "invalid_client", FAILED)
            oauth_error(await ghost.token_response(), 429, "temporarily_unavailable")

    await _within_one_window(attempt)


async def test_thirty_failures_from_an_address_lock_it_out_for_the_minute(
    app: Starlette, enrol: Enrol
) -> None:
    async def attempt() -> None:
        address = new_address()
        async with http_client(app, address) as from_there, http_client(app) as elsewhere:
            for n in range(30):  # thirty client ids, none of them locked on its own
                ghost = Caller(from_there, ONS, f"ons-evaluation-{n:012x}", new_key(), new_key())
                oauth_error(await ghost.token_response(), 401, "invalid_client", FAILED)
            genuine = await enrol(ONS, http=from_there)
            oauth_error(await genuine.token_response(), 429, "temporarily_unavailable")
            genuine.http = elsewhere
            assert (await genuine.token_response()).status_code == 200

    await _within_one_window(attempt)


async def test_a_concurrent_burst_from_one_address_gets_no_more_than_thirty_tries(
    app: Starlette, enrol: Enrol
) -> None:
    """The address's count is taken before the checks, so sixty attempts sent at once cannot all slip
    in under a limit each of them read as not yet reached."""

    async def attempt() -> None:
        async with http_client(app, new_address()) as from_there:
            ghosts = [
                Caller(from_there, ONS, f"ons-evaluation-{n:012x}", new_key(), new_key()) for n in range(60)
            ]
            answers = await asyncio.gather(*(ghost.token_response() for ghost in ghosts))
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [401] * 30 + [429] * 30, statuses
            genuine = await enrol(ONS, http=from_there)
            oauth_error(await genuine.token_response(), 429, "temporarily_unavailable")

    await _within_one_window(attempt)


async def test_successes_from_one_address_are_not_counted_against_it(app: Starlette, enrol: Enrol) -> None:
    async def attempt() -> None:
        async with http_client(app, new_address()) as from_there:
            genuine = await enrol(ONS, http=from_there)
            for _ in range(35):
                assert (await genuine.token_response()).status_code == 200

    await _within_one_window(attempt)


async def test_unreadable_credentials_count_against_the_address(app: Starlette, enrol: Enrol) -> None:
    async def attempt() -> None:
        async with http_client(app, new_address()) as from_there:
            for _ in range(15):
                junk = await from_there.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    headers={"Authorization": "Basic !!!"},
                )
                oauth_error(junk, 401, "invalid_client", "the client credentials cannot be read")
            genuine = await enrol(ONS, http=from_there)
            for _ in range(15):
                malformed = genuine.form(client_assertion="not.an.assertion")
                assert (await genuine.token_response(malformed)).status_code == 401
            oauth_error(await genuine.token_response(), 429, "temporarily_unavailable")

    await _within_one_window(attempt)


async def test_a_malformed_assertion_is_not_counted_against_the_client(ons: Caller) -> None:
    """Shape failures never reach the client: anyone could otherwise lock a client out with junk."""

    async def attempt() -> None:
        for _ in range(12):
            response = await ons.token_response(
                ons.form(client_assertion=ons.assertion(aud="https://evil.example"))
            )
            oauth_error(response, 401, "invalid_client", AUDIENCE)
        assert (await ons.token_response()).status_code == 200

    await _within_one_window(attempt)
