"""The OAuth 2.0 token endpoint and the server metadata (RFC 6749, 8414, 9068), in-process.

Every partner system gets tokens with the client-credentials grant and HTTP Basic authentication;
a token names exactly the client's one agreement. These run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import SigningKeys
from gateway.oauth import add_client, disable_client
from policies import Agreement
from tests.support.partners import PURPOSE

TOKEN = "/oauth/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
POLICE = "police-prevention"
GRANT = "grant_type=client_credentials"


async def _token_request(
    asgi: httpx.AsyncClient, body: str | bytes, auth: tuple[str, str] | None, **headers: str
) -> httpx.Response:
    return await asgi.post(TOKEN, content=body, headers={**FORM, **headers}, auth=auth)


def _assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    assert response.headers["cache-control"] == "no-store"
    return body


@pytest.fixture
def police(registered: dict[str, tuple[str, str]]) -> tuple[str, str]:
    return registered[POLICE]


# -- a successful grant --------------------------------------------------------------------------


@pytest.mark.parametrize("agreement_id", [POLICE, "ons-evaluation", "mash-safeguarding"])
async def test_token_response_is_a_short_lived_bearer_token_for_the_clients_agreement(
    agreement_id: str, asgi: httpx.AsyncClient, registered: dict[str, tuple[str, str]], settings: Settings
) -> None:
    response = await _token_request(asgi, GRANT, registered[agreement_id])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.token_ttl_seconds
    assert body["scope"] == agreement_id
    assert "refresh_token" not in body
    assert isinstance(body["access_token"], str)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"].startswith("application/json")


async def test_access_token_is_an_rfc9068_jwt_signed_by_a_published_key(
    asgi: httpx.AsyncClient, police: tuple[str, str], settings: Settings, signing: SigningKeys
) -> None:
    client_id, _ = police
    response = await _token_request(asgi, GRANT, police)
    assert response.status_code == 200, response.text
    token = jwt.decode(response.json()["access_token"], signing.verification, algorithms=["ES256"])

    assert token.header["typ"] == "at+jwt"
    assert token.header["alg"] == "ES256"
    published = (await asgi.get("/.well-known/jwks.json")).json()
    assert token.header["kid"] == signing.active.kid
    assert token.header["kid"] in {key["kid"] for key in published["keys"]}

    claims = token.claims
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.token_audience
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert claims["scope"] == POLICE
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert claims["exp"] - claims["iat"] == settings.token_ttl_seconds


async def test_every_token_has_its_own_jti(
    asgi: httpx.AsyncClient, police: tuple[str, str], signing: SigningKeys
) -> None:
    jtis = []
    for _ in range(2):
        response = await _token_request(asgi, GRANT, police)
        assert response.status_code == 200, response.text
        raw = response.json()["access_token"]
        jtis.append(jwt.decode(raw, signing.verification, algorithms=["ES256"]).claims["jti"])
    assert jtis[0] != jtis[1]


async def test_a_fresh_token_opens_the_graphql_endpoint(
    asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    token = (await _token_request(asgi, GRANT, police)).json()["access_token"]
    response = await asgi.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": f"Bearer {token}", **PURPOSE}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}


# -- scope -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [POLICE, f"  {POLICE}  "])
async def test_asking_for_the_clients_own_agreement_as_scope_is_granted(
    scope: str, asgi: httpx.AsyncClient, police: tuple[str, str], signing: SigningKeys
) -> None:
    response = await asgi.post(TOKEN, data={"grant_type": "client_credentials", "scope": scope}, auth=police)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == POLICE
    claims = jwt.decode(response.json()["access_token"], signing.verification, algorithms=["ES256"]).claims
    assert claims["scope"] == POLICE


@pytest.mark.parametrize(
    "scope",
    ["ons-evaluation", "mash-safeguarding", f"{POLICE} ons-evaluation", f"ons-evaluation {POLICE}", "", "*"],
)
async def test_asking_for_any_other_scope_is_invalid_scope(
    scope: str, asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    response = await asgi.post(TOKEN, data={"grant_type": "client_credentials", "scope": scope}, auth=police)
    _assert_oauth_error(response, 400, "invalid_scope")


# -- client authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["wrong secret", "unknown client", "another clients secret", "empty secret"])
async def test_a_client_that_cannot_authenticate_gets_invalid_client_with_a_basic_challenge(
    who: str, asgi: httpx.AsyncClient, registered: dict[str, tuple[str, str]]
) -> None:
    client_id, secret = registered[POLICE]
    auth = {
        "wrong secret": (client_id, secret + "x"),
        "unknown client": ("police-prevention-000000000000", secret),
        "another clients secret": (client_id, registered["ons-evaluation"][1]),
        "empty secret": (client_id, ""),
    }[who]
    response = await _token_request(asgi, GRANT, auth)
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "authorization", [None, "Bearer abc", "Basic", "Basic !!!not-base64!!!", "Basic " + "QQ==" * 40]
)
async def test_missing_or_malformed_basic_credentials_are_invalid_client(
    authorization: str | None, asgi: httpx.AsyncClient
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await _token_request(asgi, GRANT, None, **headers)
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_unknown_client_and_wrong_secret_are_indistinguishable(
    asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    client_id, _ = police
    wrong = await _token_request(asgi, GRANT, (client_id, "not-the-secret"))
    unknown = await _token_request(asgi, GRANT, ("no-such-client", "not-the-secret"))
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]


async def test_a_disabled_client_gets_no_token_and_its_live_tokens_stop_working(
    asgi: httpx.AsyncClient, engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    async with engine.begin() as conn:  # a client of its own: disabling one is for good
        created = await add_client(conn, agreement_id=POLICE, known_agreements=set(agreements))
    auth = (created.record.client_id, created.secret)
    issued = await _token_request(asgi, GRANT, auth)
    assert issued.status_code == 200, issued.text
    async with engine.begin() as conn:
        await disable_client(conn, created.record.client_id)

    _assert_oauth_error(await _token_request(asgi, GRANT, auth), 401, "invalid_client")
    response = await asgi.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"Authorization": f"Bearer {issued.json()['access_token']}", **PURPOSE},
    )
    assert response.status_code == 401, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# -- the shape of the request ----------------------------------------------------------------------


@pytest.mark.parametrize("with_basic", [True, False])
async def test_client_secret_in_the_body_is_invalid_request(
    with_basic: bool, asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    client_id, secret = police
    body = f"{GRANT}&client_id={client_id}&client_secret={secret}"
    response = await _token_request(asgi, body, police if with_basic else None)
    _assert_oauth_error(response, 400, "invalid_request")


async def test_client_assertion_in_the_body_is_invalid_request(
    asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    body = f"{GRANT}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    response = await _token_request(asgi, body + "&client_assertion=e30.e30.", police)
    _assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        f"{GRANT}&{GRANT}",
        f"{GRANT}&grant_type=password",
        f"{GRANT}&scope={POLICE}&scope={POLICE}",
        f"{GRANT}&&",
        b"grant_type=client_credentials&scope=\xff",
    ],
    ids=["grant_type twice", "grant_type twice, different", "scope twice", "malformed", "not utf-8"],
)
async def test_repeated_or_malformed_parameters_are_invalid_request(
    body: str | bytes, asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    _assert_oauth_error(await _token_request(asgi, body, police), 400, "invalid_request")


# authlib answers a missing grant_type as it answers one it does not support.
@pytest.mark.parametrize(
    "body",
    ["grant_type=password&username=a&password=b", "grant_type=authorization_code&code=x", "", "scope=x"],
    ids=["password", "authorization_code", "empty body", "no grant_type"],
)
async def test_other_or_missing_grant_types_are_unsupported_grant_type(
    body: str, asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    _assert_oauth_error(await _token_request(asgi, body, police), 400, "unsupported_grant_type")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data", None])
async def test_a_body_that_is_not_urlencoded_is_invalid_request(
    content_type: str | None, asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await asgi.post(
        TOKEN, content=b'{"grant_type": "client_credentials"}', headers=headers, auth=police
    )
    _assert_oauth_error(response, 400, "invalid_request")


async def test_a_body_of_4096_bytes_is_read_and_one_byte_more_is_413(
    asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    padding = "&pad="
    exact = GRANT + padding + "x" * (4096 - len(GRANT) - len(padding))
    assert len(exact) == 4096
    assert (await _token_request(asgi, exact, police)).status_code == 200
    _assert_oauth_error(await _token_request(asgi, exact + "x", police), 413, "invalid_request")


async def test_an_oversized_body_without_content_length_is_413(
    asgi: httpx.AsyncClient, police: tuple[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield GRANT.encode()
        for _ in range(5):
            yield b"&pad=" + b"x" * 1000

    response = await asgi.post(TOKEN, content=chunks(), headers=FORM, auth=police)
    assert "content-length" not in response.request.headers
    _assert_oauth_error(response, 413, "invalid_request")


async def test_get_on_the_token_endpoint_is_405(asgi: httpx.AsyncClient) -> None:
    response = await asgi.get(TOKEN, params={"grant_type": "client_credentials"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    # The token endpoint answers in OAuth's error shape (RFC 6749 5.2), like its other errors.
    assert response.json() == {"error": "invalid_request", "error_description": "use POST"}
    assert "x-audit-event-id" in response.headers


# -- discovery -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spoof",
    [{}, {"Host": "evil.example"}, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}],
    ids=["plain", "host", "forwarded"],
)
async def test_server_metadata_is_built_from_the_configured_issuer_only(
    spoof: dict[str, str], asgi: httpx.AsyncClient, settings: Settings, agreements: dict[str, Agreement]
) -> None:
    response = await asgi.get("/.well-known/oauth-authorization-server", headers=spoof)
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == settings.issuer
    assert metadata["token_endpoint"] == settings.issuer + "/oauth/token"
    assert metadata["jwks_uri"] == settings.issuer + "/.well-known/jwks.json"
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert metadata["access_token_signing_alg_values_supported"] == ["ES256"]
    assert metadata["scopes_supported"] == sorted(agreements)
    assert "evil.example" not in response.text


async def test_jwks_publishes_only_public_key_material(asgi: httpx.AsyncClient, signing: SigningKeys) -> None:
    response = await asgi.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys == signing.public_jwks["keys"]
    assert [key["kid"] for key in keys] == [signing.active.kid]
    private_members = {"d", "p", "q", "dp", "dq", "qi", "k"}
    for key in keys:
        assert not private_members & set(key), key
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
        assert set(key) == {"kty", "crv", "x", "y", "alg", "use", "kid"}
