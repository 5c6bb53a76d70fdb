"""A stand-in for the council's identity provider: a small OpenID Connect provider, served over real
HTTP on 127.0.0.1, that the console signs readers in with.

It implements the authorization code flow as a provider must, and no more: a discovery document,
an authorization endpoint (PKCE S256 required, redirect URIs registered exactly), a token endpoint
(client_secret_basic or client_secret_post, codes single-use and short-lived, the PKCE verifier
checked against the challenge) and a JWKS of ES256 keys. It "signs in" whoever the test says, and
can be told to refuse (error=access_denied) or to issue an ID token that a relying party must
refuse: one for another audience, with another nonce or issuer, expired, or signed by a key it does
not publish.

Deliberately written apart from the gateway's code (and from authlib, which the console signs in
with): this is the identity provider's side of the protocol, so that a mistake in the console's
client is not repeated here and so cancelled out. Only synthetic identities (`*.test.invalid`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.server import serve_in_thread

CODE_SECONDS: Final = 60  # an authorization code is good for this long, and once
ID_TOKEN_SECONDS: Final = 300
# authlib accepts an ID token up to 120 s past its `exp` (its default leeway): an expired token is
# made well past that, so that it is refused whatever the leeway.
EXPIRED_BY_SECONDS: Final = 3_600
_PKCE_CHALLENGE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256, no padding
_PKCE_VERIFIER: Final = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 4.1
_FORM_LIMIT: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Person:
    """Someone with an account at the identity provider: the claims their ID token carries."""

    sub: str
    email: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """A client registered with the provider: its id, secret and exact redirect URIs."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


class IdTokenFault(enum.Enum):
    """One thing wrong with the ID token the provider issues, which a relying party must refuse."""

    WRONG_AUDIENCE = "issued to another client"
    # OpenID Connect Core 3.1.3.7: the client must be in `aud`, whatever `azp` says.
    WRONG_AUDIENCE_OUR_AZP = "issued to another client, naming this one as the authorized party (azp)"
    WRONG_NONCE = "carrying a nonce the relying party did not send"
    NO_NONCE = "carrying no nonce"
    WRONG_ISSUER = "naming another issuer"
    EXPIRED = "expired an hour ago"
    UNKNOWN_KEY = "signed by a key, with a kid of its own, that the JWKS does not publish"
    FORGED_UNDER_PUBLISHED_KID = "signed by another key under the published key's kid"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The provider's refusal of an authorization request (RFC 6749 4.1.2.1), sent to redirect_uri."""

    error: str = "access_denied"
    description: str = "The person declined to sign in."


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    scope: str
    person: Person
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What the token endpoint saw of one request, for tests of how the relying party called it."""

    client_auth: str  # client_secret_basic, client_secret_post, or none
    grant_type: str
    outcome: str  # "issued" or the OAuth error code answered


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class StandInProvider:
    """The provider's state and its Starlette app. Set `issuer` to the URL it is served at (as
    `running_provider` does) before any request; set `person` before each sign-in."""

    relying_parties: tuple[RelyingParty, ...]
    issuer: str = ""
    key: ECKey = field(default_factory=lambda: _new_key())
    # What the test has arranged for the next sign-ins: who signs in, or a refusal, and any fault.
    person: Person | None = None
    refusal: Refusal | None = None
    fault: IdTokenFault | None = None
    token_requests: list[TokenRequest] = field(default_factory=list)
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Back to a well-behaved provider with nobody signed in (between tests)."""
        with self._lock:
            self.person = None
            self.refusal = None
            self.fault = None
            self.token_requests.clear()
            self._grants.clear()

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery, methods=["GET"]),
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/jwks", self._jwks, methods=["GET"]),
            ]
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "use": "sig", "alg": "ES256"}]}

    # -- endpoints ------------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        issuer = self._issuer()
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "scopes_supported": ["openid", "email", "profile"],
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "email", "groups"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.jwks())

    async def _authorize(self, request: Request) -> Response:
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        params = dict(pairs)
        # Until client_id and redirect_uri are known good, errors go to the browser, never to a
        # redirect (RFC 6749 4.1.2.1): an unregistered redirect_uri would make this an open redirect.
        party = self._party(params.get("client_id", ""))
        if party is None:
            return _error_page("invalid_client", "unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in party.redirect_uris:
            return _error_page("invalid_request", "redirect_uri is not registered for this client")
        if len(pairs) != len(params):
            return _error_page("invalid_request", "a parameter was given twice")
        state = params.get("state")

        def back(**answer: str) -> Response:
            if state is not None:
                answer["state"] = state
            return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", status_code=302)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in params.get("scope", "").split():
            return back(error="invalid_scope", error_description="scope must include openid")
        if params.get("code_challenge_method") != "S256" or not _PKCE_CHALLENGE.match(
            params.get("code_challenge", "")
        ):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        # Stricter than OpenID Connect (nonce is optional in the code flow), on purpose: the console
        # always sends one, and the tests of nonce checking rely on it.
        if not params.get("nonce"):
            return back(error="invalid_request", error_description="nonce is required")
        with self._lock:
            refusal, person = self.refusal, self.person
            if refusal is not None:
                return back(error=refusal.error, error_description=refusal.description)
            if person is None:
                return back(error="login_required", error_description="nobody is signed in")
            code = secrets.token_urlsafe(32)
            self._grants[code] = _Grant(
                client_id=party.client_id,
                redirect_uri=redirect_uri,
                code_challenge=params["code_challenge"],
                nonce=params["nonce"],
                scope=params["scope"],
                person=person,
                expires_at=time.monotonic() + CODE_SECONDS,
            )
        return back(code=code)

    async def _token(self, request: Request) -> Response:
        auth, grant_type = "none", ""
        try:
            form = await _read_form(request)
            grant_type = form.get("grant_type", "")
            party, auth = self._authenticate(request, form)
            if grant_type != "authorization_code":
                raise _OAuthError("unsupported_grant_type", "only authorization_code")
            with self._lock:
                # Single use: the code is gone at its first presentation, whatever becomes of it.
                grant = self._grants.pop(form.get("code", ""), None)
            if grant is None or grant.expires_at < time.monotonic() or grant.client_id != party.client_id:
                raise _OAuthError("invalid_grant", "unknown, used or expired code")
            if form.get("redirect_uri") != grant.redirect_uri:
                raise _OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
            verifier = form.get("code_verifier", "")
            if not _PKCE_VERIFIER.match(verifier) or not secrets.compare_digest(
                _s256(verifier), grant.code_challenge
            ):
                raise _OAuthError("invalid_grant", "PKCE verifier does not match the challenge")
        except _OAuthError as error:
            self.token_requests.append(TokenRequest(auth, grant_type, error.error))
            headers = {"cache-control": "no-store"}
            if error.status == 401:
                headers["www-authenticate"] = 'Basic realm="token"'
            return JSONResponse(
                {"error": error.error, "error_description": error.description},
                status_code=error.status,
                headers=headers,
            )
        access_token = secrets.token_urlsafe(32)
        self.token_requests.append(TokenRequest(auth, grant_type, "issued"))
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": ID_TOKEN_SECONDS,
                "scope": grant.scope,
                "id_token": self._id_token(grant, access_token),
            },
            headers={"cache-control": "no-store", "pragma": "no-cache"},
        )

    # -- helpers --------------------------------------------------------------------------------

    def _issuer(self) -> str:
        assert self.issuer, "serve the provider with running_provider(), which sets its issuer"
        return self.issuer

    def _party(self, client_id: str) -> RelyingParty | None:
        return next((p for p in self.relying_parties if p.client_id == client_id), None)

    def _authenticate(self, request: Request, form: dict[str, str]) -> tuple[RelyingParty, str]:
        """The client, by client_secret_basic or client_secret_post (exactly one of them)."""
        header = request.headers.get("authorization")
        in_body = "client_secret" in form
        if header is not None and in_body:
            raise _OAuthError("invalid_request", "more than one client authentication method")
        if header is not None:
            scheme, _, encoded = header.partition(" ")
            try:
                decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _OAuthError("invalid_client", "unreadable Basic credentials", 401) from None
            raw_id, colon, raw_secret = decoded.partition(":")
            if scheme.lower() != "basic" or not colon:
                raise _OAuthError("invalid_client", "unreadable Basic credentials", 401)
            # RFC 6749 2.3.1: each is form-urlencoded before the two are joined.
            client_id, secret, method = unquote_plus(raw_id), unquote_plus(raw_secret), "client_secret_basic"
            if "client_id" in form and form["client_id"] != client_id:
                raise _OAuthError("invalid_request", "client_id differs from the Basic credentials")
        elif in_body:
            client_id, secret, method = form.get("client_id", ""), form["client_secret"], "client_secret_post"
        else:
            raise _OAuthError("invalid_client", "client authentication required", 401)
        party = self._party(client_id)
        if party is None or not secrets.compare_digest(party.client_secret.encode(), secret.encode()):
            raise _OAuthError("invalid_client", "client authentication failed", 401)
        return party, method

    def _id_token(self, grant: _Grant, access_token: str) -> str:
        now = int(time.time())
        fault = self.fault
        claims: dict[str, Any] = {
            "iss": self._issuer(),
            "sub": grant.person.sub,
            "aud": grant.client_id,
            "iat": now,
            "auth_time": now,
            "exp": now + ID_TOKEN_SECONDS,
            "nonce": grant.nonce,
            "at_hash": _at_hash(access_token),
            "email": grant.person.email,
            "email_verified": True,
            "groups": list(grant.person.groups),
        }
        key = self.key
        header: dict[str, Any] = {"alg": "ES256", "typ": "JWT", "kid": self.key.kid}
        if fault is IdTokenFault.WRONG_AUDIENCE:
            claims["aud"] = "another-client"
        elif fault is IdTokenFault.WRONG_AUDIENCE_OUR_AZP:
            claims["aud"], claims["azp"] = ["another-client"], grant.client_id
        elif fault is IdTokenFault.WRONG_NONCE:
            claims["nonce"] = secrets.token_urlsafe(16)
        elif fault is IdTokenFault.NO_NONCE:
            del claims["nonce"]
        elif fault is IdTokenFault.WRONG_ISSUER:
            claims["iss"] = "https://idp.elsewhere.test.invalid"
        elif fault is IdTokenFault.EXPIRED:
            claims["iat"] = claims["auth_time"] = now - EXPIRED_BY_SECONDS - ID_TOKEN_SECONDS
            claims["exp"] = now - EXPIRED_BY_SECONDS
        elif fault is IdTokenFault.UNKNOWN_KEY:
            key = _new_key()
            header["kid"] = key.kid
        elif fault is IdTokenFault.FORGED_UNDER_PUBLISHED_KID:
            key = _new_key()
        return jwt.encode(header, claims, key, algorithms=["ES256"])


@contextmanager
def running_provider(*relying_parties: RelyingParty) -> Iterator[StandInProvider]:
    """The provider under uvicorn on 127.0.0.1, its issuer set to the URL it is served at."""
    provider = StandInProvider(relying_parties=relying_parties)
    with serve_in_thread(provider.app) as url:
        provider.issuer = url
        yield provider


def redirect_target(location: str) -> tuple[str, dict[str, str]]:
    """A redirect's URL without its query, and the query's parameters."""
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


def _new_key() -> ECKey:
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, private=True)
    key.ensure_kid()
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _at_hash(access_token: str) -> str:
    """OpenID Connect Core 3.1.3.6: the left half of the SHA-256 of the access token (for ES256)."""
    return _b64url(hashlib.sha256(access_token.encode("ascii")).digest()[:16])


async def _read_form(request: Request) -> dict[str, str]:
    """The urlencoded body, a parameter given twice refused (RFC 6749 3.2)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise _OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > _FORM_LIMIT:
        raise _OAuthError("invalid_request", "the body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise _OAuthError("invalid_request", "unreadable body") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise _OAuthError("invalid_request", "a parameter was given twice")
    return form


def _error_page(error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)
