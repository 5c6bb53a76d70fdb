"""Signing in to the console with OpenID Connect, against a stand-in for the council's identity provider
served over real HTTP (tests.support.oidc_provider), on SQLite and PostgreSQL.

Who the provider vouches for and the security-audit agreement admits gets a session, and the ledger a
`console sign-in` event; anyone else, and any answer of the provider the console must not accept (a
tampered state, a replayed or injected code, an ID token for another audience, with another nonce or
issuer, expired or signed by a key the provider does not publish, a refusal), gets no session, and a
page and log lines that quote nothing the provider sent beyond a safe OAuth error code.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys
from tests.conftest import FIXED_TODAY, ISSUER, REF_SECRET
from tests.support.console import Reader, error_code, recorded_as
from tests.support.oidc_provider import (
    IdTokenFault,
    Person,
    Refusal,
    RelyingParty,
    StandInProvider,
    TokenRequest,
    redirect_target,
    running_provider,
)

CLIENT_ID: Final = "gateway-console"
# With a space and a colon: client_secret_basic form-encodes both before joining id and secret.
CLIENT_SECRET: Final = "console secret: for tests only"
CALLBACK: Final = f"{ISSUER}/console/sign-in/callback"  # where the provider sends the browser back
SECURITY_TEAM: Final = "information-security"
SIGN_IN_EVENT: Final = "console sign-in"

COOKIE = "__Host-console"


@pytest.fixture(scope="session")
def running_idp() -> Iterator[StandInProvider]:
    with running_provider(RelyingParty(CLIENT_ID, CLIENT_SECRET, (CALLBACK,))) as provider:
        yield provider


@pytest.fixture
def idp(running_idp: StandInProvider) -> Iterator[StandInProvider]:
    """The provider, well-behaved and with nobody signed in, whatever the previous test arranged."""
    running_idp.reset()
    yield running_idp
    running_idp.reset()


def build_console(settings: Settings, signing: SigningKeys, engine: AsyncEngine, issuer: str) -> Starlette:
    """The gateway with the console signing in through the provider at `issuer`; no demo sign-in."""
    assert settings.issuer == ISSUER
    configured = settings.model_copy(
        update={
            "console_oidc_issuer": issuer,
            "console_oidc_client_id": CLIENT_ID,
            "console_oidc_client_secret": SecretStr(CLIENT_SECRET),
        }
    )
    return create_app(
        configured, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
    )


async def close_ledger(app: Starlette) -> None:
    ledger = app.state.gateway.ledger
    if ledger is not None:
        await ledger.close()


@pytest.fixture(scope="module")
async def oidc_console(
    settings: Settings, signing: SigningKeys, engine: AsyncEngine, running_idp: StandInProvider
) -> AsyncIterator[Starlette]:
    app = build_console(settings, signing, engine, running_idp.issuer)
    yield app
    await close_ledger(app)


def new_browser(app: Starlette) -> httpx.AsyncClient:
    """One browser, with a cookie jar of its own."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")


@pytest.fixture
async def browser(oidc_console: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with new_browser(oidc_console) as client:
        yield client


def someone(*groups: str) -> Person:
    """A synthetic person of the council, with an email no other test uses."""
    tag = secrets.token_hex(5)
    return Person(sub=f"council-{tag}", email=f"someone.{tag}@council.test.invalid", groups=groups)


async def go_to_provider(browser: httpx.AsyncClient) -> str:
    """Press the console's sign-in button: the provider's authorization URL it redirects to."""
    started = await browser.get("/console/sign-in/oidc")
    assert started.status_code == 302, started.text
    return started.headers["location"]


async def provider_answer(authorize_url: str) -> str:
    """Visit the provider (over HTTP, no cookies of the console's): the console path it sends the browser
    back to. The callback is registered at settings.issuer; the console under test is at testserver."""
    async with httpx.AsyncClient(timeout=10) as elsewhere:
        answered = await elsewhere.get(authorize_url)
    assert answered.status_code == 302, answered.text
    location = answered.headers["location"]
    assert redirect_target(location)[0] == CALLBACK, location
    return location.removeprefix(ISSUER)


async def callback_for(browser: httpx.AsyncClient) -> str:
    return await provider_answer(await go_to_provider(browser))


def with_params(callback: str, **changes: str | None) -> str:
    """The callback path with parameters replaced (None: removed)."""
    target, params = redirect_target(f"{ISSUER}{callback}")
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return str(httpx.URL(target.removeprefix(ISSUER), params=params))


async def assert_signed_out(browser: httpx.AsyncClient) -> None:
    for path in ("/console/", "/console/purpose"):
        page = await browser.get(path)
        assert page.status_code == 303 and page.headers["location"] == "/console/sign-in", (path, page.text)


async def sign_in_events(engine: AsyncEngine, email: str) -> list[Any]:
    async with engine.connect() as conn:
        query = select(audit_events).where(
            audit_events.c.acting_user == email, audit_events.c.operation_name == SIGN_IN_EVENT
        )
        return list((await conn.execute(query)).all())


def gateway_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage() + " " + str(record.__dict__)
        for record in caplog.records
        if record.name.startswith(("gateway", "authlib"))
    )


async def assert_sign_in_failed(
    answered: httpx.Response,
    browser: httpx.AsyncClient,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    person: Person,
    never_quoted: Sequence[str] = (),
) -> None:
    """Refused as a failed sign-in, with no session, no sign-in recorded for the person, and nothing the
    provider sent (the person's email, any error description) on the page or in the gateway's log."""
    assert answered.status_code in (401, 502), answered.text
    assert error_code(answered) == "CONSOLE_SIGN_IN_FAILED", answered.text
    logged = gateway_log(caplog)
    assert "console sign-in failed" in logged
    for text in (person.email, person.sub, *never_quoted):
        assert text not in answered.text
        assert text not in logged
    await assert_signed_out(browser)
    assert await sign_in_events(engine, person.email) == []


# -- the sign-in page ----------------------------------------------------------------------------------


async def test_the_sign_in_page_offers_the_identity_provider_and_no_demo_form(
    browser: httpx.AsyncClient, idp: StandInProvider
) -> None:
    page = await browser.get("/console/sign-in")
    assert page.status_code == 200
    assert 'id="sign-in-oidc" href="/console/sign-in/oidc"' in page.text
    assert "/console/sign-in/demo" not in page.text and 'id="demo-sign-in"' not in page.text
    demo = await browser.post("/console/sign-in/demo", data={"identity": "analyst", "csrf": "x"})
    assert demo.status_code == 404 and error_code(demo) == "CONSOLE_NOT_FOUND"
    await assert_signed_out(browser)


async def test_the_sign_in_button_asks_the_provider_for_a_code_with_pkce_and_a_nonce(
    browser: httpx.AsyncClient, idp: StandInProvider
) -> None:
    target, params = redirect_target(await go_to_provider(browser))
    assert target == f"{idp.issuer}/authorize"
    assert params["client_id"] == CLIENT_ID and params["redirect_uri"] == CALLBACK
    assert params["response_type"] == "code" and "openid" in params["scope"].split()
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 16 and len(params["nonce"]) >= 16
    again = redirect_target(await go_to_provider(browser))[1]
    assert all(again[name] != params[name] for name in ("state", "nonce", "code_challenge"))


# -- who gets in -----------------------------------------------------------------------------------------


async def test_a_member_of_the_security_team_signs_in_and_reads(
    browser: httpx.AsyncClient, idp: StandInProvider, engine: AsyncEngine
) -> None:
    person = someone("staff", SECURITY_TEAM)
    idp.person = person
    signed = await browser.get(await callback_for(browser))
    assert signed.status_code == 303 and signed.headers["location"] == "/console/purpose", signed.text
    # The console redeemed the code once, authenticating with its secret in the Authorization header.
    assert idp.token_requests == [TokenRequest("client_secret_basic", "authorization_code", "issued")]

    reader = Reader(browser)
    given = await reader.give_purpose("INV-OIDC-0001")
    assert given.status_code == 303 and given.headers["location"] == "/console/", given.text
    timeline = await reader.get("/console/events")
    assert timeline.status_code == 200 and error_code(timeline) is None, timeline.text
    read_event = recorded_as(timeline)
    assert read_event is not None

    [event] = await sign_in_events(engine, person.email)
    assert event.outcome == "allowed" and event.http_status == 303 and event.error_code is None
    assert event.officer_issuer == idp.issuer
    assert event.client_id == "console" and event.agreement_id == "security-audit"
    async with engine.connect() as conn:
        read = (await conn.execute(select(audit_events).where(audit_events.c.id == read_event))).one()
    assert (read.acting_user, read.officer_issuer, read.case_reference) == (
        person.email,
        idp.issuer,
        "INV-OIDC-0001",
    )


async def test_someone_outside_the_security_team_is_refused_and_recorded(
    browser: httpx.AsyncClient, idp: StandInProvider, engine: AsyncEngine
) -> None:
    person = someone("housing")
    idp.person = person
    refused = await browser.get(await callback_for(browser))
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "CONSOLE_NOT_A_READER"
    await assert_signed_out(browser)
    [event] = await sign_in_events(engine, person.email)
    assert event.outcome == "denied" and event.http_status == 403
    assert event.error_code == "CONSOLE_NOT_A_READER"
    assert event.officer_issuer == idp.issuer and event.client_id == "console"
    assert event.fields_disclosed in ("", "[]") and event.people_count == 0


# -- answers the console must not accept ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(IdTokenFault), ids=lambda fault: fault.name.lower())
async def test_an_id_token_that_must_not_be_accepted_signs_nobody_in(
    browser: httpx.AsyncClient,
    idp: StandInProvider,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    fault: IdTokenFault,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    person = someone(SECURITY_TEAM)  # would be admitted, were the token good
    idp.person, idp.fault = person, fault
    answered = await browser.get(await callback_for(browser))
    # The provider did issue a token: the console refused what was in it.
    assert [request.outcome for request in idp.token_requests] == ["issued"]
    await assert_sign_in_failed(answered, browser, engine, caplog, person)


@pytest.mark.parametrize("state", ["another", "missing"])
async def test_a_callback_with_a_tampered_state_is_refused_before_the_code_is_spent(
    browser: httpx.AsyncClient,
    idp: StandInProvider,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    state: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    person = someone(SECURITY_TEAM)
    idp.person = person
    callback = await callback_for(browser)
    tampered = with_params(callback, state=secrets.token_urlsafe(20) if state == "another" else None)
    answered = await browser.get(tampered)
    await assert_sign_in_failed(answered, browser, engine, caplog, person)
    assert idp.token_requests == []
    # The untampered answer, in the same browser, still signs the person in: the state was the fault.
    signed = await browser.get(callback)
    assert signed.status_code == 303 and signed.headers["location"] == "/console/purpose", signed.text


async def test_a_replayed_callback_signs_nobody_in(
    browser: httpx.AsyncClient,
    oidc_console: Starlette,
    idp: StandInProvider,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    person = someone(SECURITY_TEAM)
    idp.person = person
    callback = await callback_for(browser)
    assert (await browser.get(callback)).status_code == 303
    [first] = await sign_in_events(engine, person.email)

    # The same answer again, in the same browser: its state was used up with the first.
    again = await browser.get(callback)
    assert again.status_code == 401 and error_code(again) == "CONSOLE_SIGN_IN_FAILED"
    # ... and from another browser (a callback URL that leaked): no session there.
    async with new_browser(oidc_console) as other:
        replayed = await other.get(callback)
        assert replayed.status_code == 401 and error_code(replayed) == "CONSOLE_SIGN_IN_FAILED"
        assert person.email not in replayed.text
        await assert_signed_out(other)
        # ... nor with that browser's own sign-in under way: the code was spent (and PKCE binds it).
        own_state = redirect_target(await go_to_provider(other))[1]["state"]
        injected = await other.get(with_params(callback, state=own_state))
        assert injected.status_code == 401 and error_code(injected) == "CONSOLE_SIGN_IN_FAILED"
        assert "invalid_grant" in injected.text
        assert "unknown, used or expired code" not in injected.text  # the provider's description
        await assert_signed_out(other)
    assert [request.outcome for request in idp.token_requests] == ["issued", "invalid_grant"]
    assert await sign_in_events(engine, person.email) == [first]
    assert person.email not in gateway_log(caplog)


async def test_an_intercepted_code_injected_into_another_sign_in_is_refused(
    oidc_console: Starlette, idp: StandInProvider, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A code taken from someone's callback before it arrived, delivered with an attacker's own state:
    the attacker's PKCE verifier does not match the challenge the code was issued against."""
    caplog.set_level(logging.DEBUG, logger="gateway")
    victim = someone(SECURITY_TEAM)
    idp.person = victim
    async with new_browser(oidc_console) as victims, new_browser(oidc_console) as attackers:
        intercepted = await callback_for(victims)
        own_state = redirect_target(await go_to_provider(attackers))[1]["state"]
        injected = await attackers.get(with_params(intercepted, state=own_state))
        await assert_sign_in_failed(injected, attackers, engine, caplog, victim)
    assert [request.outcome for request in idp.token_requests] == ["invalid_grant"]


@pytest.mark.parametrize("error", ["access_denied", "not a code: someone@council.test.invalid said no"])
async def test_a_refusal_by_the_provider_is_shown_by_its_code_only(
    browser: httpx.AsyncClient,
    idp: StandInProvider,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    error: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    person = someone(SECURITY_TEAM)
    description = f"{person.email} declined at <b>the provider</b>"
    idp.person, idp.refusal = person, Refusal(error=error, description=description)
    answered = await browser.get(await callback_for(browser))
    quoted = [description, "<b>the provider</b>", "someone@council.test.invalid", "said no"]
    await assert_sign_in_failed(answered, browser, engine, caplog, person, never_quoted=quoted)
    if error == "access_denied":  # a well-formed OAuth error code is the one thing worth showing
        assert "(access_denied)" in answered.text
    assert idp.token_requests == []


async def test_an_identity_provider_that_cannot_be_reached_is_a_bad_gateway(
    settings: Settings, signing: SigningKeys, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_console(settings, signing, engine, f"http://127.0.0.1:{port}")
    try:
        async with new_browser(app) as browser:
            started = await browser.get("/console/sign-in/oidc")
            assert started.status_code == 502, started.text
            assert error_code(started) == "CONSOLE_SIGN_IN_FAILED"
            assert "could not be reached" in started.text and str(port) not in started.text
            await assert_signed_out(browser)
    finally:
        await close_ledger(app)


# -- configuration -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"console_oidc_issuer": "https://idp.council.test.invalid", "console_oidc_client_id": "console"},
         "GATEWAY_CONSOLE_OIDC_CLIENT_SECRET"),
        ({"console_oidc_client_secret": SecretStr("a secret")}, "GATEWAY_CONSOLE_OIDC_ISSUER"),
    ],
    ids=["issuer-without-secret", "secret-without-issuer"],
)  # fmt: skip
def test_settings_refuse_an_incomplete_sign_in_configuration(
    settings: Settings, given: dict[str, Any], missing: str
) -> None:
    with pytest.raises(ValidationError, match=missing) as refused:
        Settings(**{**settings.model_dump(), **given})
    assert "together" in str(refused.value)


async def test_a_new_sign_in_ends_the_previous_session(
    oidc_console: Starlette,
    idp: Any,
    engine: AsyncEngine,
) -> None:
    """A signed in; in the same browser the sign-in button is pressed again (it is a GET, open while
    signed in). B (not in the security team) is refused, and the browser is no longer A; C signs in,
    and a copy of A's cookie reads nothing: A's session ended on the server."""
    a, b, c = someone(SECURITY_TEAM), someone("housing"), someone(SECURITY_TEAM)
    async with new_browser(oidc_console) as browser:
        idp.person = a
        assert (await browser.get(await callback_for(browser))).status_code == 303
        await Reader(browser).give_purpose("INV-A")
        a_cookie = browser.cookies.get(COOKIE)
        idp.person = b
        refused = await browser.get(await callback_for(browser))
        assert refused.status_code == 403 and error_code(refused) == "CONSOLE_NOT_A_READER"
        still = await browser.get("/console/agreements")
        still_a = still.status_code == 200 and a.email in still.text
        idp.person = c
        assert (await browser.get(await callback_for(browser))).status_code == 303
    async with new_browser(oidc_console) as copy:
        copy.cookies.set(COOKIE, a_cookie, domain="testserver.local", path="/")
        a_alive = (await copy.get("/console/agreements")).status_code == 200
    assert (still_a, a_alive) == (False, False), (
        "after B's refused sign-in the browser still reads as A" if still_a else "",
        "A's session outlived C's sign-in in the same browser" if a_alive else "",
    )
