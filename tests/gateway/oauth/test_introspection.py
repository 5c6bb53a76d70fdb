"""Introspection (RFC 7662) and revocation (RFC 7009): for an authenticated client, about its own tokens.

The rules as `gateway.oauth.server` implements them: both endpoints authenticate the client exactly
as the token endpoint does. Introspection describes a token only if it is live, this gateway's, the
caller's own, and neither revoked nor its client disabled; every other token, garbage included, is
`{"active": false}` and nothing more. Revocation answers `{}` whether or not there was anything to
revoke, and revokes only the caller's own tokens. Both leave an audit event.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import SigningKeys
from gateway.oauth import disable_client
from tests.gateway.oauth.conftest import (
    FAILED,
    INTROSPECT_PATH,
    ONS,
    POLICE,
    REVOKE_PATH,
    Caller,
    Enrol,
    claims_of,
    event_of,
    graphql_refused,
    oauth_error,
    served,
)
from tests.support.identity import OFFICER, new_key
from tests.support.jwt_forgery import access_claims, sign

INACTIVE = {"active": False}


def described(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert isinstance(body, dict)
    return body


# -- introspection -----------------------------------------------------------------------------------


async def test_an_own_live_token_is_described(police: Caller, signing: SigningKeys) -> None:
    token = await police.token()
    claims = claims_of(token, signing)
    assert police.issuer is not None
    assert described(await police.introspect(token)) == {
        "active": True,
        "client_id": police.client_id,
        "sub": police.client_id,
        "scope": POLICE,
        "exp": claims["exp"],
        "jti": claims["jti"],
        "token_type": "DPoP",
        "cnf": {"jkt": police.dpop_key.thumbprint()},
        "act": {"sub": OFFICER, "iss": police.issuer.issuer},
    }


async def test_a_client_credentials_token_is_described_without_an_officer(ons: Caller) -> None:
    body = described(await ons.introspect(await ons.token()))
    assert body["active"] is True and body["scope"] == ONS
    assert "act" not in body


async def test_introspection_does_not_use_the_token_up(police: Caller) -> None:
    token = await police.token()
    for _ in range(2):
        assert described(await police.introspect(token))["active"] is True
    served(await police.graphql(token))


@pytest.mark.parametrize("whose", ["a client of the same agreement", "a client of another agreement"])
async def test_another_clients_token_is_inactive_and_nothing_more(
    whose: str, police: Caller, enrol: Enrol, engine: AsyncEngine
) -> None:
    other = await enrol(POLICE if "same" in whose else ONS)
    token = await other.token()
    response = await police.introspect(token)
    assert described(response) == INACTIVE
    event = await event_of(engine, response)
    assert (event["endpoint"], event["client_id"], event["token_jti"]) == (
        "introspect",
        police.client_id,
        None,
    )
    served(await other.graphql(token, purpose=other.agreement == POLICE))  # and it still works for its owner


async def test_a_revoked_token_is_inactive(police: Caller) -> None:
    token = await police.token()
    assert (await police.revoke(token)).status_code == 200
    assert described(await police.introspect(token)) == INACTIVE


async def test_a_token_of_a_disabled_client_cannot_be_introspected_at_all(
    police: Caller, engine: AsyncEngine
) -> None:
    token = await police.token()
    async with engine.begin() as conn:
        await disable_client(conn, police.client_id)
    oauth_error(await police.introspect(token), 401, "invalid_client", FAILED)


@pytest.mark.parametrize(
    "variant",
    [
        "expired beyond the leeway",
        "signed by a stranger",
        "garbage",
        "empty",
        "an officer's token",
        "a client assertion",
    ],
)
async def test_anything_but_an_own_live_token_is_inactive(
    variant: str, police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    now, leeway = int(time.time()), settings.token_leeway_seconds
    issuer = police.issuer
    assert issuer is not None
    stranger = new_key()
    makers: dict[str, Callable[[], str]] = {
        "expired beyond the leeway": lambda: sign(
            signing.active,
            access_claims(settings, police.client_id, POLICE, iat=now - 400, exp=now - leeway - 5),
        ),
        "signed by a stranger": lambda: sign(stranger, access_claims(settings, police.client_id, POLICE)),
        "garbage": lambda: "not-a-token",
        "empty": lambda: "",
        "an officer's token": lambda: issuer.token(),
        "a client assertion": lambda: police.assertion(),
    }
    raw = makers[variant]()
    assert described(await police.introspect(raw)) == INACTIVE


async def test_a_request_without_a_token_parameter_is_inactive(police: Caller) -> None:
    response = await police.post_form(INTROSPECT_PATH, police.authentication())
    assert described(response) == INACTIVE


async def test_introspection_needs_client_authentication(police: Caller) -> None:
    token = await police.token()
    anonymous = await police.http.post(INTROSPECT_PATH, data={"token": token})
    oauth_error(anonymous, 401, "invalid_client", "client authentication is required (private_key_jwt)")
    impostor = Caller(police.http, POLICE, police.client_id, new_key(), new_key())
    oauth_error(await impostor.introspect(token), 401, "invalid_client", FAILED)
    assert "active" not in anonymous.text


async def test_an_introspection_assertion_is_checked_like_a_token_requests(police: Caller) -> None:
    token = await police.token()
    form = {"token": token, **police.authentication()}
    assert described(await police.post_form(INTROSPECT_PATH, form))["active"] is True
    replayed = await police.post_form(INTROSPECT_PATH, form)
    oauth_error(replayed, 401, "invalid_client", "this client assertion was used before")
    expired = await police.introspect(token, iat=int(time.time()) - 400, exp=int(time.time()) - 100)
    oauth_error(expired, 401, "invalid_client", "the assertion has expired")


async def test_introspection_is_audited_with_the_token_it_described(
    police: Caller, engine: AsyncEngine, signing: SigningKeys
) -> None:
    token = await police.token()
    response = await police.introspect(token)
    event = await event_of(engine, response)
    assert (event["endpoint"], event["outcome"], event["http_status"]) == ("introspect", "allowed", 200)
    assert (event["client_id"], event["agreement_id"]) == (police.client_id, POLICE)
    assert event["token_jti"] == claims_of(token, signing)["jti"]


# -- revocation ---------------------------------------------------------------------------------------


async def test_revoking_an_own_token_stops_it_and_is_audited(
    police: Caller, engine: AsyncEngine, signing: SigningKeys
) -> None:
    token = await police.token()
    served(await police.graphql(token))
    response = await police.revoke(token)
    assert (response.status_code, response.json()) == (200, {})
    assert response.headers["cache-control"] == "no-store"
    event = await event_of(engine, response)
    assert (event["endpoint"], event["outcome"], event["client_id"]) == (
        "revoke",
        "allowed",
        police.client_id,
    )
    assert event["token_jti"] == claims_of(token, signing)["jti"]

    refused = await police.graphql(token)
    graphql_refused(refused, 401, "UNAUTHENTICATED")
    assert 'error_description="the token was revoked"' in refused.headers["www-authenticate"]
    again = await police.revoke(token)  # revoking twice is no error
    assert (again.status_code, again.json()) == (200, {})
    served(await police.graphql(await police.token()))  # the client is not affected, only the token


async def test_a_client_cannot_revoke_another_clients_token_nor_learn_that_it_could_not(
    police: Caller, enrol: Enrol, engine: AsyncEngine
) -> None:
    victim = await enrol(POLICE)
    token = await victim.token()
    response = await police.revoke(token)
    assert (response.status_code, response.json()) == (200, {})  # the answer garbage gets too
    assert (await event_of(engine, response))["token_jti"] is None
    served(await victim.graphql(token))
    assert described(await victim.introspect(token))["active"] is True


@pytest.mark.parametrize("raw", ["garbage", "", "a.b.c"])
async def test_revoking_garbage_is_the_same_empty_answer(raw: str, police: Caller) -> None:
    response = await police.revoke(raw)
    assert (response.status_code, response.json()) == (200, {})


async def test_revocation_needs_client_authentication(police: Caller) -> None:
    token = await police.token()
    anonymous = await police.http.post(REVOKE_PATH, data={"token": token})
    oauth_error(anonymous, 401, "invalid_client")
    impostor = Caller(police.http, POLICE, police.client_id, new_key(), new_key())
    oauth_error(await impostor.revoke(token), 401, "invalid_client", FAILED)
    served(await police.graphql(token))  # nothing was revoked


@pytest.mark.parametrize("path", [INTROSPECT_PATH, REVOKE_PATH])
async def test_parameters_in_the_url_are_refused(path: str, police: Caller) -> None:
    token = await police.token()
    response = await police.http.post(path, params={"token": token}, data=police.authentication())
    oauth_error(response, 400, "invalid_request", "send parameters in the body, never in the URL")
