"""The token endpoint as a whole, and the server's published documents (RFC 6749, 8414, 9068, 8693).

A partner system authenticates with a client assertion, proves possession of its DPoP key and gets
a short-lived RFC 9068 token for its one agreement: with client credentials, or, where the agreement
names officers, by exchanging an officer's token. What a request must look like (a urlencoded body,
nothing in the URL, no parameter twice), the scopes and grants it may ask for, and the audit event
every request leaves. In-process, on SQLite and PostgreSQL. The attacks on each part have files of
their own: client assertions, DPoP, token exchange, access tokens at /graphql, introspection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from joserfc.jwk import ECKey
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import SigningKeys, generate_key
from gateway.oauth import TokenIssuer
from policies import Agreement
from tests.gateway.oauth.conftest import (
    ACCESS_TOKEN_TYPE,
    ONS,
    POLICE,
    TOKEN_EXCHANGE,
    TOKEN_PATH,
    Caller,
    Enrol,
    app_with,
    claims_of,
    event_of,
    header_of,
    http_client,
    oauth_error,
    served,
)
from tests.support.identity import OFFICER

VERIFIED = ("police-prevention", "youth-justice", "mash-safeguarding")
CREDENTIALS = (
    "ons-evaluation", "dwp-worklessness", "security-audit", "family-hub-outreach", "public-health-planning",
    "school-attendance",
)  # fmt: skip


def thumbprint(key: ECKey) -> str:
    """RFC 7638, written out: SHA-256 of the required members in lexical order, no whitespace."""
    public = key.as_dict(private=False)
    members = {name: public[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_the_shipped_agreements_are_the_ones_these_tests_expect(agreements: dict[str, Agreement]) -> None:
    assert set(agreements) == {*VERIFIED, *CREDENTIALS}
    assert {a.id for a in agreements.values() if a.access.verifies_officers} == set(VERIFIED)
    assert all(a.access.binds_tokens for a in agreements.values())
    assert all(a.access.client_authentication == ("private_key_jwt",) for a in agreements.values())


# -- a successful grant --------------------------------------------------------------------------


@pytest.mark.parametrize("agreement_id", [*VERIFIED, *CREDENTIALS])
async def test_every_agreement_gets_a_short_lived_dpop_token_for_itself_alone(
    agreement_id: str, enrol: Enrol, settings: Settings
) -> None:
    caller = await enrol(agreement_id)
    response = await caller.token_response()
    assert response.status_code == 200, response.text
    body = response.json()
    expected = {"access_token", "token_type", "expires_in", "scope"}
    if agreement_id in VERIFIED:
        expected.add("issued_token_type")
        assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert set(body) == expected  # no refresh token, no id token
    assert body["token_type"] == "DPoP"
    assert body["expires_in"] == settings.token_ttl_seconds <= 600
    assert body["scope"] == agreement_id
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"].startswith("application/json")


async def test_the_access_token_is_an_rfc9068_jwt_bound_to_the_dpop_key_and_naming_the_officer(
    police: Caller, settings: Settings, signing: SigningKeys, web: httpx.AsyncClient
) -> None:
    before = int(time.time())
    token = await police.token()
    header, claims = header_of(token, signing), claims_of(token, signing)

    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": signing.active.kid}
    published = (await web.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {key["kid"] for key in published["keys"]}

    assert police.issuer is not None
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
        "cnf",
        "act",
    }
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.token_audience == settings.issuer + "/graphql"
    assert claims["sub"] == claims["client_id"] == police.client_id
    assert claims["scope"] == POLICE
    assert claims["cnf"] == {"jkt": thumbprint(police.dpop_key)}
    assert claims["act"] == {"sub": OFFICER, "iss": police.issuer.issuer}
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == settings.token_ttl_seconds


async def test_a_client_credentials_token_names_no_officer(ons: Caller, signing: SigningKeys) -> None:
    claims = claims_of(await ons.token(), signing)
    assert "act" not in claims
    assert claims["cnf"] == {"jkt": thumbprint(ons.dpop_key)}
    assert claims["scope"] == ONS


async def test_every_token_has_its_own_jti(ons: Caller, signing: SigningKeys) -> None:
    jtis = {claims_of(await ons.token(), signing)["jti"] for _ in range(3)}
    assert len(jtis) == 3


async def test_a_fresh_token_opens_the_graphql_endpoint(police: Caller, ons: Caller) -> None:
    served(await police.graphql(await police.token()))
    served(await ons.graphql(await ons.token(), purpose=False))


async def test_a_shorter_configured_lifetime_is_the_one_issued(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrol: Enrol
) -> None:
    async with app_with(settings, engine, signing, token_ttl_seconds=60) as app, http_client(app) as http:
        caller = await enrol(ONS, http=http)
        token = await caller.token()
        assert caller.last["expires_in"] == 60
        claims = claims_of(token, signing)
        assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize("ttl", [0, 601, 3600])
def test_no_token_lives_longer_than_ten_minutes(ttl: int, settings: Settings, signing: SigningKeys) -> None:
    assert (
        Settings(**{**settings.model_dump(), "token_ttl_seconds": 600}).token_ttl_seconds == 600
    )  # the control
    with pytest.raises(ValidationError, match="token_ttl_seconds"):
        Settings(**{**settings.model_dump(), "token_ttl_seconds": ttl})
    with pytest.raises(ValueError, match="at most 600"):
        TokenIssuer(signing, issuer=settings.issuer, audience=settings.token_audience, ttl=ttl)


# -- scope -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [POLICE, f"  {POLICE}  "])
async def test_asking_for_the_clients_own_agreement_as_scope_is_granted(
    scope: str, police: Caller, signing: SigningKeys
) -> None:
    token = await police.token(form=police.form(scope=scope))
    assert police.last["scope"] == POLICE
    assert claims_of(token, signing)["scope"] == POLICE


@pytest.mark.parametrize(
    "scope",
    [
        ONS,  # another agreement, with no officers
        "mash-safeguarding",  # another agreement that names officers too
        "youth-justice",
        f"{POLICE} {ONS}",
        f"{ONS} {POLICE}",
        "POLICE-PREVENTION",
        f"{POLICE},{ONS}",
        " ",
        "*",
        "openid",
    ],
)
async def test_asking_for_any_other_scope_is_invalid_scope(scope: str, police: Caller) -> None:
    response = await police.token_response(police.form(scope=scope))
    oauth_error(response, 400, "invalid_scope", "this client may only request its own agreement as scope")


async def test_a_client_of_an_agreement_without_officers_cannot_ask_for_one_with_them(ons: Caller) -> None:
    oauth_error(await ons.token_response(ons.form(scope=POLICE)), 400, "invalid_scope")


@pytest.mark.parametrize("parameter", ["scope", "client_id", "requested_token_type", "actor_token"])
async def test_a_parameter_sent_without_a_value_is_treated_as_omitted(parameter: str, police: Caller) -> None:
    response = await police.token_response({**police.form(), parameter: ""})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == POLICE


# -- grants ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grant",
    [
        "password",
        "authorization_code",
        "refresh_token",
        "implicit",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        None,
    ],
)
@pytest.mark.parametrize("agreement_id", [POLICE, ONS])
async def test_other_or_missing_grant_types_are_unsupported_grant_type(
    grant: str | None, agreement_id: str, enrol: Enrol
) -> None:
    caller = await enrol(agreement_id)
    response = await caller.token_response(caller.form(grant_type=grant))
    oauth_error(response, 400, "unsupported_grant_type", "use client_credentials or token exchange")


async def test_client_credentials_are_refused_where_the_agreement_names_its_officer(police: Caller) -> None:
    response = await police.token_response(police.form(grant_type="client_credentials"))
    description = oauth_error(response, 400, "unauthorized_client")
    assert "exchange the officer's token" in description


@pytest.mark.parametrize(
    ("moment", "code"),
    [("the day before it starts", "AGREEMENT_NOT_IN_EFFECT"), ("the day after it ends", "AGREEMENT_EXPIRED")],
)
async def test_an_agreement_out_of_force_gets_no_tokens(
    moment: str,
    code: str,
    settings: Settings,
    engine: AsyncEngine,
    signing: SigningKeys,
    agreements: dict[str, Agreement],
    enrol: Enrol,
) -> None:
    effective = agreements[ONS].effective
    day = effective.start - timedelta(days=1) if "before" in moment else effective.until + timedelta(days=1)
    async with app_with(settings, engine, signing, today=day) as app, http_client(app) as http:
        caller = await enrol(ONS, http=http)
        response = await caller.token_response()
    oauth_error(response, 400, "unauthorized_client", f"the agreement is not in force ({code})")


# -- the shape of the request ------------------------------------------------------------------------


async def test_a_client_secret_in_the_body_is_invalid_request(ons: Caller) -> None:
    response = await ons.token_response({**ons.form(), "client_id": ons.client_id, "client_secret": "s3cr3t"})
    oauth_error(response, 400, "invalid_request", "send no client_secret in the body")


async def test_an_assertion_and_basic_credentials_together_are_invalid_request(ons: Caller) -> None:
    basic = base64.b64encode(f"{ons.client_id}:whatever".encode()).decode()
    response = await ons.token_response(headers={"Authorization": f"Basic {basic}"})
    oauth_error(response, 400, "invalid_request", "use one client authentication method")


@pytest.mark.parametrize(
    "suffix",
    [
        "&grant_type=client_credentials",
        "&grant_type=password",
        f"&scope={ONS}&scope={ONS}",
        "&client_assertion=x",
        "&&",
        "&scope=%00",
    ],
    ids=[
        "grant_type twice",
        "grant_type twice, different",
        "scope twice",
        "assertion twice",
        "malformed",
        "NUL",
    ],
)
async def test_repeated_or_malformed_parameters_are_invalid_request(suffix: str, ons: Caller) -> None:
    body = str(httpx.QueryParams(ons.form())) + suffix
    response = await ons.http.post(
        TOKEN_PATH,
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "DPoP": ons.proof()},
    )
    oauth_error(response, 400, "invalid_request", "malformed body or a repeated parameter")


async def test_a_body_that_is_not_utf8_is_invalid_request(ons: Caller) -> None:
    body = str(httpx.QueryParams(ons.form())).encode() + b"&scope=\xff"
    response = await ons.http.post(
        TOKEN_PATH,
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "DPoP": ons.proof()},
    )
    oauth_error(response, 400, "invalid_request", "malformed body or a repeated parameter")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data", None])
async def test_a_body_that_is_not_urlencoded_is_invalid_request(
    content_type: str | None, ons: Caller
) -> None:
    headers = {"DPoP": ons.proof(), **({"Content-Type": content_type} if content_type else {})}
    response = await ons.http.post(TOKEN_PATH, content=json.dumps(ons.form()).encode(), headers=headers)
    oauth_error(response, 400, "invalid_request", "the body must be application/x-www-form-urlencoded")


async def test_parameters_in_the_url_are_refused_even_with_a_valid_body(ons: Caller) -> None:
    response = await ons.http.post(
        TOKEN_PATH, params={"scope": ONS}, data=ons.form(), headers={"DPoP": ons.proof()}
    )
    oauth_error(response, 400, "invalid_request", "send parameters in the body, never in the URL")


async def test_two_authorization_headers_are_invalid_request(ons: Caller) -> None:
    response = await ons.http.post(
        TOKEN_PATH,
        data=ons.form(),
        headers=[("DPoP", ons.proof()), ("Authorization", "Basic eDp5"), ("Authorization", "Basic eDp6")],
    )
    oauth_error(response, 400, "invalid_request", "send at most one Authorization header")


async def test_two_dpop_headers_are_invalid_request(ons: Caller) -> None:
    response = await ons.http.post(
        TOKEN_PATH, data=ons.form(), headers=[("DPoP", ons.proof()), ("DPoP", ons.proof())]
    )
    oauth_error(response, 400, "invalid_request", "send at most one DPoP header")


async def test_a_body_of_16_kib_is_read_and_one_byte_more_is_413(police: Caller) -> None:
    """An assertion, an officer's token and the rest fit; a padded body one byte over does not."""

    async def send(size: int) -> httpx.Response:
        body = str(httpx.QueryParams(police.form())) + "&pad="
        body += "x" * (size - len(body))
        assert len(body) == size
        return await police.http.post(
            TOKEN_PATH,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "DPoP": police.proof()},
        )

    exact = await send(16 * 1024)
    assert exact.status_code == 200, exact.text
    oauth_error(await send(16 * 1024 + 1), 413, "invalid_request", "the request is too large")


async def test_an_oversized_body_without_content_length_is_413(ons: Caller) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield str(httpx.QueryParams(ons.form())).encode()
        for _ in range(17):
            yield b"&pad=" + b"x" * 1000

    response = await ons.http.post(
        TOKEN_PATH,
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "DPoP": ons.proof()},
    )
    assert "content-length" not in response.request.headers
    oauth_error(response, 413, "invalid_request")


@pytest.mark.parametrize("path", [TOKEN_PATH, "/oauth/introspect", "/oauth/revoke"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405_in_oauth_error_shape_and_audited(
    path: str, method: str, web: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await web.request(method, path, params={"grant_type": "client_credentials"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": "invalid_request", "error_description": "use POST"}
    event = await event_of(engine, response)
    assert (event["endpoint"], event["outcome"], event["http_status"]) == (
        path.rsplit("/", 1)[1],
        "denied",
        405,
    )
    assert event["client_id"] is None


# -- the audit ledger ----------------------------------------------------------------------------------


async def test_a_token_exchange_is_recorded_with_the_token_and_the_officer(
    police: Caller, engine: AsyncEngine, signing: SigningKeys, agreements: dict[str, Agreement]
) -> None:
    form = police.form()
    response = await police.token_response(form)
    assert response.status_code == 200, response.text
    event = await event_of(engine, response)
    jti = claims_of(response.json()["access_token"], signing)["jti"]
    assert (event["endpoint"], event["outcome"], event["http_status"], event["error_code"]) == (
        "token", "allowed", 200, None,
    )  # fmt: skip
    assert (event["client_id"], event["agreement_id"], event["agreement_version"]) == (
        police.client_id, POLICE, agreements[POLICE].version,
    )  # fmt: skip
    assert event["token_jti"] == jti
    assert event["acting_user"] == OFFICER
    assert event["people_count"] == 0
    stored = json.dumps({k: str(v) for k, v in event.items()})
    for secret in (form["client_assertion"], form["subject_token"], response.json()["access_token"]):
        for part in secret.split("."):
            assert part not in stored  # no assertion, subject token or token in the ledger


async def test_a_refused_token_request_is_recorded_with_what_was_claimed_and_nothing_more(
    police: Caller, engine: AsyncEngine
) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"alg": "ES256"}, private=True)
    stranger.ensure_kid()
    impostor = Caller(police.http, POLICE, police.client_id, stranger, police.dpop_key, police.issuer)
    response = await impostor.token_response()
    oauth_error(response, 401, "invalid_client", "client authentication failed")
    event = await event_of(engine, response)
    assert (event["endpoint"], event["outcome"], event["http_status"], event["error_code"]) == (
        "token", "denied", 401, "invalid_client",
    )  # fmt: skip
    assert event["client_id"] == police.client_id  # as claimed: recorded, never trusted
    assert (event["agreement_id"], event["token_jti"], event["acting_user"]) == (None, None, None)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"scope": ONS}, "invalid_scope"),
        ({"grant_type": "client_credentials"}, "unauthorized_client"),
        ({"subject_token": "not-a-token"}, "invalid_request"),
    ],
    ids=["another scope", "client credentials where officers are named", "a bad subject token"],
)
async def test_a_refusal_after_the_client_authenticated_names_its_agreement(
    change: dict[str, str], error: str, police: Caller, engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    """The client proved itself; what it then asked for was refused. The event says whose agreement."""
    response = await police.token_response(police.form(**change))
    oauth_error(response, 400, error)
    event = await event_of(engine, response)
    assert (event["client_id"], event["agreement_id"], event["agreement_version"], event["outcome"]) == (
        police.client_id, POLICE, agreements[POLICE].version, "denied",
    )  # fmt: skip
    assert event["token_jti"] is None


# -- discovery -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spoof",
    [{}, {"Host": "evil.example"}, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}],
    ids=["plain", "host", "forwarded"],
)
async def test_server_metadata_is_built_from_the_configured_issuer_only(
    spoof: dict[str, str], web: httpx.AsyncClient, settings: Settings, agreements: dict[str, Agreement]
) -> None:
    response = await web.get("/.well-known/oauth-authorization-server", headers=spoof)
    assert response.status_code == 200
    metadata = response.json()
    issuer = settings.issuer
    assert metadata["issuer"] == issuer
    assert metadata["token_endpoint"] == issuer + "/oauth/token"
    assert metadata["jwks_uri"] == issuer + "/.well-known/jwks.json"
    assert metadata["introspection_endpoint"] == issuer + "/oauth/introspect"
    assert metadata["revocation_endpoint"] == issuer + "/oauth/revoke"
    assert metadata["grant_types_supported"] == ["client_credentials", TOKEN_EXCHANGE]
    assert metadata["client_assertion_types_supported"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert metadata["scopes_supported"] == sorted(agreements)
    assert metadata["access_token_signing_alg_values_supported"] == ["ES256"]
    assert "evil.example" not in response.text
    # RFC 8414 2: what is REQUIRED (response_types_supported too, though it is empty: no browser flows).
    assert {"issuer", "token_endpoint", "response_types_supported", "jwks_uri"} <= set(metadata)


async def test_server_metadata_offers_no_weak_method_or_algorithm(web: httpx.AsyncClient) -> None:
    metadata = (await web.get("/.well-known/oauth-authorization-server")).json()
    for endpoint in ("token", "introspection", "revocation"):
        methods = metadata[f"{endpoint}_endpoint_auth_methods_supported"]
        assert methods[0] == "private_key_jwt"
        assert not {"none", "client_secret_post", "client_secret_jwt"} & set(methods)
        assert metadata[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == ["ES256", "PS256"]
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "PS256"]
    assert metadata["response_types_supported"] == []  # no authorization endpoint, no browser flows


async def test_jwks_publishes_only_public_key_material(web: httpx.AsyncClient, signing: SigningKeys) -> None:
    response = await web.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys == signing.public_jwks["keys"]
    assert [key["kid"] for key in keys] == [signing.active.kid]
    for key in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), key
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
        assert set(key) == {"kty", "crv", "x", "y", "alg", "use", "kid"}


async def test_during_a_rotation_the_jwks_publishes_the_retired_key_beside_the_new_one(
    settings: Settings, engine: AsyncEngine
) -> None:
    old, new = generate_key(), generate_key()
    rotating = SigningKeys.from_keys(
        [new, old], retired={str(old.kid): datetime.now(UTC) - timedelta(minutes=1)}
    )
    async with app_with(settings, engine, rotating) as app, http_client(app) as http:
        keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    assert [key["kid"] for key in keys] == [new.kid, old.kid]
    assert all("d" not in key for key in keys)
