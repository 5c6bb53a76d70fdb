"""Token exchange (RFC 8693): where an agreement says `acting_user: verified`, the officer is named by
a token from the partner's own identity provider, and the gateway token carries them in `act`.

The subject token must come from one of the issuers of the client's own agreement, for the gateway's
audience, live, short-lived, signed by one of that issuer's installed keys (never a key the token
carries or points to), and name the officer in the agreement's claim; anything else is
`invalid_request` (RFC 8693 2.2.2). At /graphql the officer comes from the token: a header may repeat
it, never change it, and a token that names nobody is refused where the agreement wants a verified
officer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import SigningKeys
from tests.gateway.oauth.conftest import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    ONS,
    POLICE,
    TOKEN_EXCHANGE,
    Caller,
    Enrol,
    claims_of,
    event_of,
    graphql_refused,
    oauth_error,
    served,
)
from tests.support import identity
from tests.support.identity import OFFICER, new_key
from tests.support.jwt_forgery import access_claims, hs256, sign, unsigned
from tests.support.partners import PURPOSE

VERIFIED = ("police-prevention", "youth-justice", "mash-safeguarding")
WINDOW = "the subject token is expired, not yet valid, or for another audience"
UNTRUSTED = "the subject token's issuer is not one this agreement trusts"
UNSUPPORTED = "the subject token needs a kid and an algorithm the gateway accepts"
CARRIES_KEY = "the subject token carries or points to a key: it is never followed"
NO_OFFICER = "the subject token does not name an officer in preferred_username"
LIFETIME = "the subject token's lifetime is not acceptable"
# What the gateway answers for a subject token it cannot trust. RFC 8693 2.2.2 wants invalid_request:
# see test_an_untrusted_subject_token_is_invalid_request_as_rfc_8693_says (a known deviation).
SUBJECT_TOKEN_ERROR = "invalid_request"


def _now() -> int:
    return int(time.time())


def _claims(issuer: identity.TestIssuer, **changes: Any) -> dict[str, Any]:
    claims = dict(jwt.decode(issuer.token(), issuer.key, algorithms=["ES256"]).claims)
    claims.update(changes)
    return claims


def _stranger_as(issuer: identity.TestIssuer, *, kid: str | None = None, carried: bool = False) -> str:
    """A token with the issuer's claims, signed by a key the issuer never published (under `kid`, or
    its own; `carried` puts the key in the header too)."""
    key = new_key()
    header: dict[str, Any] = {"alg": "ES256", "kid": kid or key.kid}
    if carried:
        header["jwk"] = key.as_dict(private=False)
    return jwt.encode(header, _claims(issuer), key, algorithms=["ES256"])


# Subject tokens that must not name an officer: how to make one from the trusted issuer, and why not.
REFUSED: dict[str, tuple[Callable[[identity.TestIssuer, dict[str, identity.TestIssuer]], str], str]] = {
    "from another partner's identity provider": (lambda i, all_: all_["youth-justice"].token(), UNTRUSTED),
    "from an issuer nobody trusts": (
        lambda i, all_: identity.TestIssuer(
            "https://login.evil.example", i.audience, i.officer_claim, new_key()
        ).token(),
        UNTRUSTED,
    ),
    "naming the trusted issuer with a trailing slash": (
        lambda i, all_: i.token(iss=i.issuer + "/"),
        UNTRUSTED,
    ),
    "with no iss": (lambda i, all_: i.token(iss=None), UNTRUSTED),
    "for another audience": (lambda i, all_: i.token(aud="urn:council:another-service"), WINDOW),
    "for the gateway's token endpoint instead of its audience": (
        lambda i, all_: i.token(aud="http://127.0.0.1:8000/oauth/token"),
        WINDOW,
    ),
    "with no aud": (lambda i, all_: i.token(aud=None), WINDOW),
    "expired": (lambda i, all_: i.token(iat=_now() - 600, exp=_now() - 120), WINDOW),
    "not valid before next hour": (lambda i, all_: i.token(nbf=_now() + 3600), WINDOW),
    "issued next hour": (lambda i, all_: i.token(iat=_now() + 3600, exp=_now() + 3900), WINDOW),
    "with no exp": (lambda i, all_: i.token(exp=None), WINDOW),
    "with no iat": (lambda i, all_: i.token(iat=None), WINDOW),
    "living a day": (lambda i, all_: i.token(iat=_now() - 10, exp=_now() + 86_400), LIFETIME),
    "with no officer claim": (lambda i, all_: i.token(preferred_username=None), NO_OFFICER),
    "naming the officer in sub only": (
        lambda i, all_: i.token(preferred_username=None, sub=OFFICER),
        NO_OFFICER,
    ),
    "with an empty officer": (lambda i, all_: i.token(preferred_username=""), NO_OFFICER),
    "with a list of officers": (
        lambda i, all_: i.token(preferred_username=[OFFICER, "officer-2"]),
        NO_OFFICER,
    ),
    "with an officer name holding a space": (
        lambda i, all_: i.token(preferred_username="officer 1234"),
        NO_OFFICER,
    ),
    "with an officer name holding SQL": (
        lambda i, all_: i.token(preferred_username="x'; DROP TABLE audit_events; --"),
        NO_OFFICER,
    ),
    "with an officer name of 201 characters": (
        lambda i, all_: i.token(preferred_username="o" * 201),
        NO_OFFICER,
    ),
    "signed by a stranger under the issuer's kid": (
        lambda i, all_: _stranger_as(i, kid=i.key.kid),
        "the subject token's signature does not verify",
    ),
    "signed by a stranger under its own kid": (
        lambda i, all_: _stranger_as(i),
        "the subject token's kid is not one of its issuer's keys",
    ),
    "with a path as kid": (
        lambda i, all_: i.token(header={"alg": "ES256", "kid": "../../../etc/passwd"}),
        "the subject token's kid is not one of its issuer's keys",
    ),
    "with no kid": (lambda i, all_: i.token(header={"alg": "ES256"}), UNSUPPORTED),
    "alg none": (lambda i, all_: unsigned({"kid": i.key.kid}, _claims(i)), UNSUPPORTED),
    "HS256 keyed with the issuer's public key": (
        lambda i, all_: hs256(
            json.dumps(i.key.as_dict(private=False)).encode(), {"kid": i.key.kid}, _claims(i)
        ),
        UNSUPPORTED,
    ),
    "carrying its own key in jwk": (
        lambda i, all_: _stranger_as(i, carried=True),
        CARRIES_KEY,
    ),
    "pointing to keys by jku": (
        lambda i, all_: i.token(header={"alg": "ES256", "kid": i.key.kid, "jku": "http://127.0.0.1:9/keys"}),
        CARRIES_KEY,
    ),
    "pointing to a certificate by x5u": (
        lambda i, all_: i.token(header={"alg": "ES256", "kid": i.key.kid, "x5u": "http://127.0.0.1:9/cert"}),
        CARRIES_KEY,
    ),
    "with its signature stripped": (
        lambda i, all_: i.token().rsplit(".", 1)[0] + ".",
        "the subject token's signature does not verify",
    ),
    "in two segments": (lambda i, all_: i.token().rsplit(".", 1)[0], "the subject token is malformed"),
    "of garbage": (lambda i, all_: "a.b.c", "the subject token is malformed"),
}


# -- what is issued --------------------------------------------------------------------------------------


@pytest.mark.parametrize("agreement_id", VERIFIED)
async def test_the_issued_token_names_the_verified_officer_and_their_issuer(
    agreement_id: str, enrol: Enrol, signing: SigningKeys, engine: AsyncEngine
) -> None:
    caller = await enrol(agreement_id)
    assert caller.issuer is not None
    response = await caller.token_response(caller.form(**caller.grant("a.officer@partner.example")))
    assert response.status_code == 200, response.text
    assert response.json()["issued_token_type"] == ACCESS_TOKEN_TYPE
    claims = claims_of(response.json()["access_token"], signing)
    assert claims["act"] == {"sub": "a.officer@partner.example", "iss": caller.issuer.issuer}
    assert claims["sub"] == claims["client_id"] == caller.client_id  # the client is the subject
    event = await event_of(engine, response)
    assert (event["acting_user"], event["officer_issuer"], event["agreement_id"]) == (
        "a.officer@partner.example",
        caller.issuer.issuer,
        agreement_id,
    )


@pytest.mark.parametrize(
    "subject_token_type",
    [JWT_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:id_token", ACCESS_TOKEN_TYPE],
)
async def test_a_jwt_id_token_or_access_token_may_be_exchanged(
    subject_token_type: str, police: Caller
) -> None:
    response = await police.token_response(police.form(subject_token_type=subject_token_type))
    assert response.status_code == 200, response.text


async def test_an_explicit_request_for_an_access_token_is_granted(police: Caller) -> None:
    response = await police.token_response(police.form(requested_token_type=ACCESS_TOKEN_TYPE))
    assert response.status_code == 200, response.text


async def test_a_subject_token_with_fractional_times_is_accepted(police: Caller) -> None:
    now = time.time()
    response = await police.token_response(police.form(**police.grant(iat=now, exp=now + 300.5)))
    assert response.status_code == 200, response.text


# -- what is refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(REFUSED))
async def test_a_subject_token_that_cannot_be_trusted_is_refused_with_its_reason(
    variant: str, police: Caller, issuers: dict[str, identity.TestIssuer], engine: AsyncEngine
) -> None:
    make, reason = REFUSED[variant]
    assert police.issuer is not None
    response = await police.token_response(police.form(subject_token=make(police.issuer, issuers)))
    oauth_error(response, 400, SUBJECT_TOKEN_ERROR, reason)
    event = await event_of(engine, response)
    assert (event["outcome"], event["error_code"], event["acting_user"], event["token_jti"]) == (
        "denied", SUBJECT_TOKEN_ERROR, None, None,
    )  # fmt: skip


async def test_a_police_officers_token_does_not_serve_another_partners_client(
    enrol: Enrol, issuers: dict[str, identity.TestIssuer]
) -> None:
    mash = await enrol("mash-safeguarding")
    response = await mash.token_response(mash.form(subject_token=issuers[POLICE].token()))
    oauth_error(response, 400, SUBJECT_TOKEN_ERROR, UNTRUSTED)


async def test_a_gateway_token_cannot_be_exchanged_for_another(police: Caller) -> None:
    token = await police.token()
    response = await police.token_response(
        police.form(subject_token=token, subject_token_type=ACCESS_TOKEN_TYPE)
    )
    oauth_error(response, 400, SUBJECT_TOKEN_ERROR, UNTRUSTED)


@pytest.mark.parametrize("variant", ["from an issuer nobody trusts", "expired", "with no officer claim"])
async def test_an_untrusted_subject_token_is_invalid_request_as_rfc_8693_says(
    variant: str, police: Caller, issuers: dict[str, identity.TestIssuer]
) -> None:
    make, reason = REFUSED[variant]
    assert police.issuer is not None
    response = await police.token_response(police.form(subject_token=make(police.issuer, issuers)))
    oauth_error(response, 400, "invalid_request", reason)


@pytest.mark.parametrize(
    "changes",
    [
        {"subject_token": None},
        {"subject_token": ""},
        {"subject_token_type": None},
        {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
        {"subject_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    ],
    ids=["no subject token", "empty subject token", "no type", "SAML", "refresh token"],
)
async def test_a_missing_subject_token_or_type_is_invalid_request(
    changes: dict[str, str | None], police: Caller
) -> None:
    response = await police.token_response(police.form(**changes))
    oauth_error(response, 400, "invalid_request", "send subject_token and a JWT subject_token_type")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            "only access tokens are issued",
        ),
        (
            {"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"},
            "only access tokens are issued",
        ),
        (
            {"actor_token": "x.y.z", "actor_token_type": JWT_TOKEN_TYPE},
            "actor tokens are not accepted: the client is the actor",
        ),
    ],
    ids=["a refresh token", "an id token", "an actor token"],
)
async def test_asking_for_another_token_or_naming_another_actor_is_invalid_request(
    changes: dict[str, str], reason: str, police: Caller
) -> None:
    oauth_error(await police.token_response(police.form(**changes)), 400, "invalid_request", reason)


async def test_token_exchange_is_refused_for_an_agreement_that_names_no_issuers(
    ons: Caller, issuers: dict[str, identity.TestIssuer]
) -> None:
    form = ons.form(
        grant_type=TOKEN_EXCHANGE, subject_token=issuers[POLICE].token(), subject_token_type=JWT_TOKEN_TYPE
    )
    oauth_error(
        await ons.token_response(form),
        400,
        "unauthorized_client",
        "this agreement does not name officers: use client_credentials",
    )


async def test_a_failed_exchange_still_needs_an_authenticated_client(
    police: Caller, issuers: dict[str, identity.TestIssuer]
) -> None:
    """The subject token is looked at only once the client is known: no oracle for stolen tokens."""
    response = await police.token_response(
        police.form(client_assertion=police.assertion(aud="https://evil.example"))
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# -- at /graphql ---------------------------------------------------------------------------------------------


async def test_the_officer_comes_from_the_token_and_is_recorded_without_a_header(
    police: Caller, engine: AsyncEngine
) -> None:
    token = await police.token()
    response = await police.graphql(token, purpose=False, headers={"X-Case-Reference": "CASE-2026-0042"})
    served(response)
    event = await event_of(engine, response)
    assert police.issuer is not None
    assert (event["acting_user"], event["officer_issuer"], event["case_reference"], event["outcome"]) == (
        OFFICER,
        police.issuer.issuer,
        "CASE-2026-0042",
        "allowed",
    )


async def test_a_header_repeating_the_officer_is_accepted(police: Caller) -> None:
    served(await police.graphql(await police.token()))  # PURPOSE names the same officer


@pytest.mark.parametrize("other", ["someone-else", OFFICER.upper(), OFFICER + "x", "officer-9876"])
async def test_a_header_naming_another_officer_is_acting_user_mismatch(
    other: str, police: Caller, engine: AsyncEngine
) -> None:
    token = await police.token()
    response = await police.graphql(token, headers={"X-Acting-User": other})
    graphql_refused(response, 403, "ACTING_USER_MISMATCH")
    assert (
        response.json()["errors"][0]["message"] == "X-Acting-User differs from the officer the token names."
    )
    assert other not in response.text
    event = await event_of(engine, response)
    assert (event["outcome"], event["error_code"], event["http_status"]) == (
        "denied",
        "ACTING_USER_MISMATCH",
        403,
    )
    # The event names the officer the token's issuer verified and the case, not the header's claim.
    assert police.issuer is not None
    assert (event["acting_user"], event["officer_issuer"], event["case_reference"]) == (
        OFFICER,
        police.issuer.issuer,
        "CASE-2026-0042",
    )
    assert event["people_count"] == 0


async def test_the_officer_the_token_names_is_the_one_exchanged_for(police: Caller) -> None:
    token = await police.token(form=police.form(**police.grant("officer-9876")))
    served(await police.graphql(token, headers={"X-Acting-User": "officer-9876"}))
    graphql_refused(await police.graphql(token), 403, "ACTING_USER_MISMATCH")  # PURPOSE names officer-1234


async def test_a_token_naming_no_officer_is_refused_where_officers_must_be_verified(
    police: Caller, settings: Settings, signing: SigningKeys
) -> None:
    """Signed by the gateway and bound to the client's key, but without `act`: a header cannot stand in."""
    unverified = sign(
        signing.active,
        access_claims(settings, police.client_id, POLICE, cnf={"jkt": police.dpop_key.thumbprint()}),
    )
    response = await police.graphql(unverified)  # with X-Acting-User and a case reference
    graphql_refused(response, 403, "ACTING_USER_NOT_VERIFIED")


async def test_an_agreement_with_asserted_officers_takes_the_header(
    enrol: Enrol, engine: AsyncEngine
) -> None:
    """The control: where the agreement says `asserted`, the header is the acting user."""
    security = await enrol("security-audit")
    response = await security.graphql(await security.token(), headers={"X-Acting-User": "auditor-7"})
    served(response)
    event = await event_of(engine, response)
    assert (event["acting_user"], event["officer_issuer"]) == ("auditor-7", None), "asserted, not verified"


def test_the_exchanging_agreements_are_the_ones_with_verified_officers(
    issuers: dict[str, identity.TestIssuer],
) -> None:
    assert set(issuers) == set(VERIFIED)
    assert ONS not in issuers
    assert all(issuer.officer_claim == "preferred_username" for issuer in issuers.values())
    assert PURPOSE["X-Acting-User"] == OFFICER
