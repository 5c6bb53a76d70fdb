"""Access tokens at /graphql: what the gateway signed, for it, lately, and still allowed.

Each hand-made token here differs from one the gateway would accept (the control) in one thing,
signed with the gateway's real key unless the point is the key. A refusal is 401 UNAUTHENTICATED
with both challenges carrying `error="invalid_token"` and the reason. Then the token's life: the
client disabled or the token revoked stops it on the next request, and a signing key, once
rotated out, keeps serving its tokens for the retirement window and not a moment longer.
(The classic forgeries, alg none, HS256, stranger's keys, are also in tests/gateway/test_http_contract.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import (
    RETIREMENT,
    SigningKeys,
    generate_key,
    load_key_file,
    rotate_key_file,
    write_key_file,
)
from gateway.oauth import disable_client, revoke_token
from policies import load_agreements
from tests.conftest import ISSUER, register
from tests.gateway.oauth.conftest import (
    ONS,
    POLICE,
    SANDBOX,
    TYPENAME,
    Caller,
    Enrol,
    app_with,
    claims_of,
    event_of,
    graphql_refused,
    http_client,
    served,
)
from tests.support.identity import OFFICER
from tests.support.jwt_forgery import access_claims, access_header

CHALLENGE = 'DPoP realm="partner-gateway", algs="ES256 PS256"'


def invalid_token(response: httpx.Response, description: str) -> None:
    graphql_refused(response, 401, "UNAUTHENTICATED")
    details = f'error="invalid_token", error_description="{description}"'
    assert (
        response.headers["www-authenticate"]
        == f'{CHALLENGE}, {details}, Bearer realm="partner-gateway", {details}'
    )
    assert response.json()["errors"][0]["message"] == "The access token is not valid."


def hand_made(
    settings: Settings,
    key: ECKey,
    caller: Caller,
    *,
    header: dict[str, Any] | None = None,
    alg: str = "ES256",
    **changes: Any,
) -> str:
    """A token as the gateway would issue it to `caller` (bound to its DPoP key, naming its officer)."""
    claims: dict[str, Any] = {"cnf": {"jkt": caller.dpop_key.thumbprint()}}
    if caller.issuer is not None:
        claims["act"] = {"sub": OFFICER, "iss": caller.issuer.issuer}
    claims = access_claims(settings, caller.client_id, caller.agreement, **{**claims, **changes})
    return jwt.encode(header or access_header(key), claims, key, algorithms=[alg], default_type=None)


def _now() -> int:
    return int(time.time())


def _key(curve: str = "P-256") -> ECKey:
    key = ECKey.generate_key(curve, private=True)
    key.ensure_kid()
    return key


# Each: (what changes, the reason /graphql gives). `k` is the gateway's key, `s` the settings.
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "lives 601 seconds": ({"iat": "now", "exp": "now+601"}, "the token lives longer than the gateway issues"),
    "lives a day": ({"iat": "now", "exp": "now+86400"}, "the token lives longer than the gateway issues"),
    "expired": ({"iat": "now-700", "exp": "now-100"}, "the token has expired"),
    "not valid for an hour": ({"nbf": "now+3600"}, "a claim has the wrong value"),
    "issued in an hour": ({"iat": "now+3600", "exp": "now+3900"}, "a claim has the wrong value"),
    "for the issuer rather than /graphql": ({"aud": ISSUER}, "a claim has the wrong value"),
    "for /graphql and another audience": (
        {"aud": [ISSUER + "/graphql", "https://evil.example"]},
        "the token is for another audience too",
    ),
    "from another issuer": ({"iss": "https://login.met-police.example"}, "a claim has the wrong value"),
    "with no jti": ({"jti": None}, "a required claim is missing"),
    "with no sub": ({"sub": None}, "a required claim is missing"),
    "with sub another client": ({"sub": "ons-evaluation-aaaaaaaaaaaa"}, "sub must be the client"),
    "with a scope that is a list": ({"scope": [POLICE]}, "malformed claims"),
    "for another agreement's scope": ({"scope": ONS}, "scope is not the client's agreement"),
    "with a malformed cnf": ({"cnf": "thumbprint"}, "malformed confirmation claim"),
    "with a malformed act": ({"act": OFFICER}, "malformed actor claim"),
    "for a client that does not exist": (
        {"client_id": "police-prevention-000000000000", "sub": "police-prevention-000000000000"},
        "the client is not enabled",
    ),
}

HEADERS: dict[str, tuple[dict[str, Any], str]] = {
    "typ JWT": ({"typ": "JWT"}, "not an access token (typ must be at+jwt)"),
    "typ dpop+jwt": ({"typ": "dpop+jwt"}, "not an access token (typ must be at+jwt)"),
    "no typ": ({"typ": None}, "not an access token (typ must be at+jwt)"),
    "a jwk in the header": ({"jwk": "own"}, "the token's header is not one the gateway signs"),
    "a jku in the header": (
        {"jku": "http://127.0.0.1:9/jwks"},
        "the token's header is not one the gateway signs",
    ),
    "an x5u in the header": (
        {"x5u": "http://127.0.0.1:9/cert"},
        "the token's header is not one the gateway signs",
    ),
    "no kid": ({"kid": None}, "the token was not signed by a key the gateway publishes"),
    "an unknown kid": ({"kid": "no-such-key"}, "the token was not signed by a key the gateway publishes"),
    "a path as kid": (
        {"kid": "../../signing-key.jwk.json"},
        "the token was not signed by a key the gateway publishes",
    ),
}


def _times(changes: dict[str, Any]) -> dict[str, Any]:
    """'now+601' and friends, computed when the token is made."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if isinstance(value, str) and value.startswith("now"):
            out[name] = _now() + int(value[3:] or 0)
        else:
            out[name] = value
    return out


async def test_the_control_a_hand_made_token_like_the_gateways_is_served(
    police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    served(await police.graphql(hand_made(settings, signing.active, police)))


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_a_token_with_one_claim_wrong_is_invalid_token(
    variant: str, police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    changes, reason = VARIANTS[variant]
    invalid_token(
        await police.graphql(hand_made(settings, signing.active, police, **_times(changes))), reason
    )


@pytest.mark.parametrize("variant", list(HEADERS))
async def test_a_token_with_a_header_the_gateway_never_writes_is_invalid_token(
    variant: str, police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    changes, reason = HEADERS[variant]
    if changes.get("jwk") == "own":
        changes = {"jwk": signing.active.as_dict(private=False)}
    token = hand_made(settings, signing.active, police, header=access_header(signing.active, **changes))
    invalid_token(await police.graphql(token), reason)


@pytest.mark.parametrize(("curve", "alg"), [("P-384", "ES384"), ("P-521", "ES512")], ids=["ES384", "ES512"])
async def test_the_algorithm_is_pinned_to_es256(
    curve: str, alg: str, police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    other = _key(curve)
    header = access_header(signing.active, alg=alg)  # under the gateway's kid
    token = hand_made(settings, other, police, header=header, alg=alg)
    invalid_token(await police.graphql(token), "the token's header is not one the gateway signs")


async def test_a_token_signed_by_a_key_outside_the_gateways_set_is_invalid_token(
    police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    stranger = _key()
    own_kid = hand_made(settings, stranger, police, header=access_header(stranger))
    invalid_token(await police.graphql(own_kid), "the token was not signed by a key the gateway publishes")
    real_kid = hand_made(settings, stranger, police, header=access_header(signing.active))
    invalid_token(await police.graphql(real_kid), "malformed token or bad signature")


async def test_a_tampered_token_is_invalid_token(police: Caller, signing: SigningKeys) -> None:
    token = await police.token()
    head, _, signature = token.split(".")
    claims = claims_of(token, signing)
    for change in (
        {"scope": ONS},
        {"exp": claims["exp"] + 3600},
        {"act": {"sub": "someone-else", "iss": claims["act"]["iss"]}},
    ):
        forged = base64.urlsafe_b64encode(json.dumps({**claims, **change}).encode()).decode().rstrip("=")
        invalid_token(
            await police.graphql(f"{head}.{forged}.{signature}"), "malformed token or bad signature"
        )
    served(await police.graphql(token))  # the untouched token


@pytest.mark.parametrize("what", ["client assertion", "DPoP proof", "officer's token"])
async def test_other_jwts_of_the_protocol_are_not_access_tokens(what: str, police: Caller) -> None:
    assert police.issuer is not None
    raw = {
        "client assertion": police.assertion(),
        "DPoP proof": police.proof(),
        "officer's token": police.issuer.token(),
    }[what]
    response = await police.graphql(raw)
    invalid_token(response, "not an access token (typ must be at+jwt)")


# -- the token's life --------------------------------------------------------------------------------


async def test_a_disabled_clients_token_stops_working_on_the_next_request(
    police: Caller, engine: AsyncEngine
) -> None:
    token = await police.token()
    served(await police.graphql(token))
    async with engine.begin() as conn:
        await disable_client(conn, police.client_id)
    invalid_token(await police.graphql(token), "the client is not enabled")


async def test_with_revocations_pushed_a_disabled_clients_token_stops_within_moments(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrol: Enrol
) -> None:
    """With the app's lifespan running: on PostgreSQL, answered from memory kept current by
    LISTEN/NOTIFY. A disable committed elsewhere reaches the process milliseconds after the commit
    (a request sent within that window was still served about 1 time in 20, when measured), so what
    holds is that it stops promptly, and for good. tests/e2e/test_identity_across_processes.py
    disables from the command line, as an operator does, and finds the next request refused."""
    async with app_with(settings, engine, signing) as app, app.router.lifespan_context(app):
        revocations = app.state.gateway.revocations
        if engine.dialect.name == "postgresql":
            for _ in range(200):
                if revocations.is_pushed:
                    break
                await asyncio.sleep(0.01)
            assert revocations.is_pushed
        async with http_client(app) as http:
            caller = await enrol(POLICE, http=http)  # added after the listener read everything: pushed too
            token = await caller.token()
            served(await caller.graphql(token))
            async with engine.begin() as conn:
                await disable_client(conn, caller.client_id)
            for _ in range(40):
                response = await caller.graphql(token)
                if response.status_code != 200:
                    break
                await asyncio.sleep(0.05)
            invalid_token(response, "the client is not enabled")
            invalid_token(await caller.graphql(token), "the client is not enabled")


async def test_with_revocations_pushed_a_token_revoked_here_is_refused_on_the_very_next_request(
    settings: Settings,
    engine: AsyncEngine,
    signing: SigningKeys,
    enrol: Enrol,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process that commits a revocation refuses the token at once, without waiting for its notice
    (made slow here, as on a loaded network, so that only the process's own record can refuse it)."""
    async with app_with(settings, engine, signing) as app:
        revocations = app.state.gateway.revocations
        noticed = revocations._noticed

        def slowly(*notice: Any) -> None:  # a token's revocation notice only; clients come as ever
            delay = 2.0 if str(notice[-1]).startswith("token:") else 0.0
            asyncio.get_running_loop().call_later(delay, noticed, *notice)

        monkeypatch.setattr(revocations, "_noticed", slowly)  # before the listener registers it
        async with app.router.lifespan_context(app):
            if engine.dialect.name == "postgresql":
                for _ in range(200):
                    if revocations.is_pushed:
                        break
                    await asyncio.sleep(0.01)
                assert revocations.is_pushed
            async with http_client(app) as http:
                caller = await enrol(POLICE, http=http)
                for _ in range(5):  # no window: every time, the very next request
                    token = await caller.token()
                    served(await caller.graphql(token))
                    assert (await caller.revoke(token)).status_code == 200
                    invalid_token(await caller.graphql(token), "the token was revoked")


async def test_a_revoked_token_stays_refused_in_the_leeway_after_its_expiry(
    police: Caller, settings: Settings, signing: SigningKeys, engine: AsyncEngine
) -> None:
    """A verifier accepts a token until exp + leeway; its revocation must last at least as long,
    whether it was revoked before its expiry or within the leeway after it."""
    now = _now()
    for revoked_at_exp in (now + 60, now - 5):  # revoked while live / revoked in the leeway
        token = hand_made(settings, signing.active, police, iat=now - 60, exp=now - 5)
        jti = claims_of(token, signing)["jti"]
        async with engine.begin() as conn:
            await revoke_token(conn, jti=jti, client_id=police.client_id, expires_at=revoked_at_exp)
        invalid_token(await police.graphql(token), "the token was revoked")
    # The control: the same kind of token, expired but within the leeway, is served unrevoked.
    served(await police.graphql(hand_made(settings, signing.active, police, iat=now - 60, exp=now - 5)))
    assert settings.token_leeway_seconds > 5


async def test_a_revoked_token_is_refused_and_the_clients_other_tokens_still_work(police: Caller) -> None:
    revoked, other = await police.token(), await police.token()
    response = await police.revoke(revoked)
    assert (response.status_code, response.json()) == (200, {})
    invalid_token(await police.graphql(revoked), "the token was revoked")
    served(await police.graphql(other))


async def test_the_audit_event_of_a_refused_token_names_no_client(
    police: Caller, settings: Settings, engine: AsyncEngine
) -> None:
    forged = hand_made(settings, _key(), police)
    response = await police.graphql(forged)
    graphql_refused(response, 401, "UNAUTHENTICATED")
    event = await event_of(engine, response)
    assert (event["client_id"], event["agreement_id"], event["token_jti"]) == (None, None, None)
    assert (event["outcome"], event["error_code"]) == ("denied", "UNAUTHENTICATED")


# -- signing key rotation ----------------------------------------------------------------------------


async def test_tokens_of_a_retired_key_work_through_the_retirement_window_and_not_after(
    settings: Settings, engine: AsyncEngine, enrol: Enrol
) -> None:
    old, new = generate_key(), generate_key()
    before = SigningKeys.from_keys([old])
    async with app_with(settings, engine, before) as app, http_client(app) as http:
        caller = await enrol(POLICE, http=http)
        token = await caller.token()  # signed by the key about to be retired
    assert jwt.decode(token, before.verification, algorithms=["ES256"]).header["kid"] == old.kid

    rotated_at = datetime.now(UTC)
    for elapsed, accepted in (
        (timedelta(0), True),
        (RETIREMENT - timedelta(minutes=1), True),
        (RETIREMENT, False),
    ):
        keys = SigningKeys.from_keys([new, old], retired={str(old.kid): rotated_at}, now=rotated_at + elapsed)
        async with app_with(settings, engine, keys) as app, http_client(app) as http:
            caller.http = http
            published = {key["kid"] for key in (await http.get("/.well-known/jwks.json")).json()["keys"]}
            response = await caller.graphql(token)
            fresh = await caller.token()
        assert new.kid in published
        assert (
            jwt.decode(fresh, keys.verification, algorithms=["ES256"]).header["kid"] == new.kid
        )  # new key signs
        if accepted:
            served(response)
            assert old.kid in published
        else:
            invalid_token(response, "the token was not signed by a key the gateway publishes")
            assert old.kid not in published
            assert old.kid not in {key.kid for key in keys.verification.keys}


async def test_a_retired_key_that_signs_after_its_window_is_refused(
    settings: Settings, engine: AsyncEngine, enrol: Enrol
) -> None:
    """Someone who kept the retired private key cannot mint tokens once the window is over."""
    old, new = generate_key(), generate_key()
    keys = SigningKeys.from_keys(
        [new, old], retired={str(old.kid): datetime.now(UTC) - RETIREMENT - timedelta(seconds=1)}
    )
    async with app_with(settings, engine, keys) as app, http_client(app) as http:
        caller = await enrol(POLICE, http=http)
        invalid_token(
            await caller.graphql(hand_made(settings, old, caller)),
            "the token was not signed by a key the gateway publishes",
        )
        served(await caller.graphql(hand_made(settings, new, caller)))


async def test_a_rotation_reaches_a_running_gateway_without_a_restart(
    settings: Settings, engine: AsyncEngine, enrol: Enrol, tmp_path: Path
) -> None:
    """`gateway keys rotate` rewrites the key file; the running app publishes the new key at once,
    signs with it from `signs_from`, and still accepts the tokens the old key signed."""
    key_file = tmp_path / "signing-key.jwk.json"
    old = generate_key()
    write_key_file(key_file, [old])
    live = load_key_file(key_file, refresh_seconds=0)
    async with app_with(settings, engine, live) as app, http_client(app) as http:
        caller = await enrol(POLICE, http=http)
        before = await caller.token()

        async def signer(token: str) -> str:
            return str(jwt.decode(token, live.verification, algorithms=["ES256"]).header["kid"])

        async def published() -> list[str]:
            return [key["kid"] for key in (await http.get("/.well-known/jwks.json")).json()["keys"]]

        fresh, starts, _ = rotate_key_file(key_file, signs_after=timedelta(seconds=2))
        assert await published() == [fresh.kid, old.kid], "published before it signs"
        assert await signer(await caller.token()) == old.kid, "not signing yet"
        await asyncio.sleep(max(0.0, (starts - datetime.now(UTC)).total_seconds()) + 0.05)
        after = await caller.token()
        assert await signer(after) == fresh.kid
        served(await caller.graphql(after))
        served(await caller.graphql(before))  # the old key's token, within its window


async def test_a_key_file_that_becomes_unreadable_leaves_the_keys_in_force(
    settings: Settings, engine: AsyncEngine, enrol: Enrol, tmp_path: Path
) -> None:
    key_file = tmp_path / "signing-key.jwk.json"
    write_key_file(key_file, [generate_key()])
    live = load_key_file(key_file, refresh_seconds=0)
    signing = live.active.kid
    key_file.write_text("{not json")
    async with app_with(settings, engine, live) as app, http_client(app) as http:
        caller = await enrol(POLICE, http=http)
        token = await caller.token()
        served(await caller.graphql(token))
    assert jwt.decode(token, live.verification, algorithms=["ES256"]).header["kid"] == signing


# -- an agreement with bearer tokens -----------------------------------------------------------------


async def test_in_an_agreement_without_binding_a_bearer_token_works_and_a_proof_binds_anyway(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, sandbox_dir: Path
) -> None:
    sandbox = load_agreements(sandbox_dir)
    async with (
        app_with(settings, engine, signing, agreements_dir=sandbox_dir) as app,
        http_client(app) as http,
    ):
        made = (await register(engine, sandbox, [SANDBOX]))[SANDBOX]
        caller = Caller(http, SANDBOX, made.client_id, made.key, made.dpop_key)

        bearer = await caller.token(dpop=False)
        assert caller.last["token_type"] == "Bearer"
        assert "cnf" not in claims_of(bearer, signing)
        ok = await http.post("/graphql", json=TYPENAME, headers={"Authorization": f"Bearer {bearer}"})
        served(ok)
        invalid_token(
            await caller.graphql(bearer, purpose=False), "the scheme does not fit the token's binding"
        )

        bound = await caller.token()  # a proof sent anyway: the token is bound
        assert caller.last["token_type"] == "DPoP"
        assert claims_of(bound, signing)["cnf"] == {"jkt": caller.dpop_key.thumbprint()}
        as_bearer = await http.post("/graphql", json=TYPENAME, headers={"Authorization": f"Bearer {bound}"})
        invalid_token(as_bearer, "the scheme does not fit the token's binding")
        served(await caller.graphql(bound, purpose=False))
