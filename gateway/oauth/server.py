"""The OAuth 2.0 authorization server for partner systems: token, introspection and revocation.

Grants: `client_credentials`, and token exchange (RFC 8693) of an officer's token from the partner's
own identity provider for a gateway token that names the officer in `act`. Clients authenticate as
their agreement says (`gateway.oauth.authentication`). Where the agreement binds tokens (or the client
sends a proof anyway), the token endpoint needs a DPoP proof and the token carries its key's
thumbprint (`cnf.jkt`, RFC 9449). A token is for the client's one agreement (asking for another scope
is `invalid_scope`), for at most ten minutes, and only while that agreement is in force.

The endpoints are the gateway's own, on joserfc: authlib's server is synchronous and has neither
DPoP nor token exchange, and every check here may need the shared replay store. Each request is
answered with its outcome for the audit ledger (never the secret, an assertion or a token).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final
from urllib.parse import parse_qsl

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.db import is_unavailable
from gateway.guard import Throttled
from gateway.http import (
    CLIENT_CLOSED_REQUEST,
    CLIENT_DISCONNECTED,
    BodyTooLargeError,
    ClientDisconnectedError,
    json_response,
    media_type,
    read_body,
)
from gateway.keys import ALGORITHM
from gateway.oauth.authentication import (
    ASSERTION_TYPE,
    Authenticated,
    ClientAuthenticationError,
    ClientAuthenticator,
)
from gateway.oauth.clients import CLIENT_ALGORITHMS
from gateway.oauth.dpop import ALGORITHMS as DPOP_ALGORITHMS
from gateway.oauth.dpop import DPoPError, Proof, ProofChecker
from gateway.oauth.officers import OfficerIssuers, SubjectTokenError
from gateway.oauth.revocations import Revocations, TokenRefusedError, revoke_token
from gateway.oauth.tokens import AccessClaims, InvalidTokenError, Officer, TokenIssuer, TokenVerifier
from policies import Agreement, out_of_force

log = logging.getLogger("gateway.oauth")

MAX_REQUEST_BYTES: Final = 16 * 1024  # an assertion, a subject token and a DPoP proof fit
TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a path, not a password
INTROSPECTION_PATH: Final = "/oauth/introspect"
REVOCATION_PATH: Final = "/oauth/revoke"
CLIENT_CREDENTIALS: Final = "client_credentials"
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
SUBJECT_TOKEN_TYPES: Final = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token", ACCESS_TOKEN_TYPE}
)
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """What an endpoint did, for the audit ledger: never a secret, an assertion or a token."""

    client_id: str | None  # as claimed, unless `authenticated`
    agreement_id: str | None  # the authenticated client's agreement; None before authentication
    status: int
    error: str | None
    token_jti: str | None = None
    officer: Officer | None = None
    authenticated: bool = False  # the client proved itself, whatever the answer


@dataclass
class _Caller:
    """Who is asking, as far as the request has got: claimed, then authenticated."""

    client_id: str | None = None
    agreement_id: str | None = None

    def authenticated(self, authenticated: Authenticated) -> None:
        self.client_id = authenticated.client.client_id
        self.agreement_id = authenticated.agreement.id


class _Refusal(Exception):
    def __init__(
        self, status: int, error: str, description: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.headers = status, error, description, headers or {}


_Handler = Callable[[Request, "str | None", "_Caller"], Awaitable["tuple[JSONResponse, TokenOutcome]"]]


class AuthorizationServer:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        issuer: str,
        authenticator: ClientAuthenticator,
        issuer_of_tokens: TokenIssuer,
        verifier: TokenVerifier,
        dpop: ProofChecker,
        officers: OfficerIssuers,
        revocations: Revocations,
        today: Callable[[], date],
        admit: Callable[[str, Agreement], Awaitable[Throttled | None]] | None = None,
    ) -> None:
        self._engine = engine
        self._token_url = issuer + TOKEN_PATH
        self._authenticator = authenticator
        self._tokens = issuer_of_tokens
        self._verifier = verifier
        self._dpop = dpop
        self._officers = officers
        self._revocations = revocations
        self._today = today
        self._admit = admit  # the client's rate limit, counted once it has proved who it is

    # -- the three endpoints ----------------------------------------------------------------------

    async def token(self, request: Request, address: str | None) -> tuple[JSONResponse, TokenOutcome]:
        return await self._answer(request, address, self._token)

    async def introspect(self, request: Request, address: str | None) -> tuple[JSONResponse, TokenOutcome]:
        return await self._answer(request, address, self._introspect)

    async def revoke(self, request: Request, address: str | None) -> tuple[JSONResponse, TokenOutcome]:
        return await self._answer(request, address, self._revoke)

    async def _answer(
        self, request: Request, address: str | None, handler: _Handler
    ) -> tuple[JSONResponse, TokenOutcome]:
        """A bug raises; a refusal, a client that went away and a database that cannot answer do not."""
        caller = _Caller()
        try:
            return await handler(request, address, caller)
        except _Refusal as refusal:
            return self._error(refusal, caller)
        except ClientAuthenticationError as failed:
            headers = {"WWW-Authenticate": 'Basic realm="partner-gateway"'} if failed.status == 401 else {}
            if failed.status == 429:
                headers = {"Retry-After": "60"}
            return self._error(
                _Refusal(failed.status, failed.error, failed.description, headers=headers),
                _Caller(failed.client_id),
            )
        except ClientDisconnectedError:
            return self._error(
                _Refusal(CLIENT_CLOSED_REQUEST, CLIENT_DISCONNECTED, "the client disconnected"), caller
            )
        except Exception as error:
            if not is_unavailable(error):
                raise
            log.warning("database unavailable", extra={"error_type": type(error).__name__})
            unavailable = _Refusal(
                503,
                "temporarily_unavailable",
                "the client registry cannot be read",
                headers={"Retry-After": "5"},
            )
            return self._error(unavailable, caller)

    def _error(self, refusal: _Refusal, caller: _Caller) -> tuple[JSONResponse, TokenOutcome]:
        body = {"error": refusal.error, "error_description": refusal.description}
        response = json_response(body, status=refusal.status, headers=refusal.headers)
        outcome = TokenOutcome(
            caller.client_id,
            caller.agreement_id,
            refusal.status,
            refusal.error,
            authenticated=caller.agreement_id is not None,
        )
        return response, outcome

    # -- POST /oauth/token ------------------------------------------------------------------------

    async def _token(
        self, request: Request, address: str | None, caller: _Caller
    ) -> tuple[JSONResponse, TokenOutcome]:
        form = await self._form(request)
        dpop_headers = request.headers.getlist("dpop")
        if len(dpop_headers) > 1:
            raise _Refusal(400, "invalid_request", "send at most one DPoP header")
        authenticated = await self._authenticator.authenticate(request.headers, form, address=address)
        client, agreement = authenticated.client, authenticated.agreement
        caller.authenticated(authenticated)
        await self._admitted(authenticated)
        refused = out_of_force(agreement, today=self._today())
        if refused is not None:
            raise _Refusal(400, "unauthorized_client", f"the agreement is not in force ({refused.code})")
        requested = form.get("scope")
        if requested is not None and requested.strip() != agreement.id:
            raise _Refusal(400, "invalid_scope", "this client may only request its own agreement as scope")
        proof = await self._proof(dpop_headers, required=agreement.access.binds_tokens)
        grant = form.get("grant_type")
        officer = None
        if grant == TOKEN_EXCHANGE:
            officer = await self._exchanged_officer(form, authenticated)
        elif grant == CLIENT_CREDENTIALS:
            if agreement.access.verifies_officers:
                raise _Refusal(
                    400,
                    "unauthorized_client",
                    "this agreement names its officer: exchange the officer's token (RFC 8693) instead",
                )
        else:
            raise _Refusal(400, "unsupported_grant_type", "use client_credentials or token exchange")
        issued = self._tokens.issue(
            client_id=client.client_id, scope=agreement.id, jkt=proof.jkt if proof else None, officer=officer
        )
        body: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "DPoP" if proof else "Bearer",
            "expires_in": issued.expires_in,
            "scope": agreement.id,
        }
        if grant == TOKEN_EXCHANGE:
            body["issued_token_type"] = ACCESS_TOKEN_TYPE
        response = json_response(body, headers=self._nonce_header(proof is not None))
        return response, TokenOutcome(
            client.client_id,
            agreement.id,
            200,
            None,
            token_jti=issued.jti,
            officer=officer,
            authenticated=True,
        )

    async def _proof(self, values: list[str], *, required: bool) -> Proof | None:
        if not values and not required:
            return None
        try:
            return await self._dpop.check(values, method="POST", url=self._token_url, access_token=None)
        except DPoPError as error:
            raise _Refusal(400, error.error, error.description, headers=self._nonce_header(True)) from None

    async def _exchanged_officer(self, form: Mapping[str, str], authenticated: Authenticated) -> Officer:
        access = authenticated.agreement.access
        if not access.verifies_officers:
            raise _Refusal(
                400, "unauthorized_client", "this agreement does not name officers: use client_credentials"
            )
        if form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES or not form.get("subject_token"):
            raise _Refusal(400, "invalid_request", "send subject_token and a JWT subject_token_type")
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise _Refusal(400, "invalid_request", "only access tokens are issued")
        if "actor_token" in form:
            raise _Refusal(400, "invalid_request", "actor tokens are not accepted: the client is the actor")
        try:
            return await self._officers.officer(form["subject_token"], access.officer_issuers)
        except SubjectTokenError as error:
            # RFC 8693 2.2.2: a subject token that is invalid or unacceptable is invalid_request.
            raise _Refusal(400, "invalid_request", str(error)) from None

    # -- POST /oauth/introspect (RFC 7662) and /oauth/revoke (RFC 7009) ---------------------------

    async def _introspect(
        self, request: Request, address: str | None, caller: _Caller
    ) -> tuple[JSONResponse, TokenOutcome]:
        authenticated, claims = await self._clients_own_token(request, address, caller)
        description: dict[str, Any] = {"active": False}
        if claims is not None and await self._usable(claims):
            description = {
                "active": True,
                "client_id": claims.client_id,
                "sub": claims.client_id,
                "scope": claims.scope,
                "exp": claims.expires_at,
                "jti": claims.jti,
                "token_type": "DPoP" if claims.jkt else "Bearer",
            }
            if claims.jkt:
                description["cnf"] = {"jkt": claims.jkt}
            if claims.officer:
                description["act"] = {"sub": claims.officer.subject, "iss": claims.officer.issuer}
        return json_response(description), _answered(authenticated, claims)

    async def _revoke(
        self, request: Request, address: str | None, caller: _Caller
    ) -> tuple[JSONResponse, TokenOutcome]:
        authenticated, claims = await self._clients_own_token(request, address, caller)
        if claims is not None:  # an expired token, or another's, needs nothing
            async with self._engine.begin() as conn:
                await revoke_token(
                    conn, jti=claims.jti, client_id=claims.client_id, expires_at=claims.expires_at
                )
            self._revocations.revoked_here(jti=claims.jti, expires_at=claims.expires_at)
        # RFC 7009 2.2: the same answer whether or not there was anything to revoke.
        return json_response({}), _answered(authenticated, claims)

    async def _clients_own_token(
        self, request: Request, address: str | None, caller: _Caller
    ) -> tuple[Authenticated, AccessClaims | None]:
        """The authenticated client of an introspection or revocation, and the claims of the `token`
        it names if that is a live token this gateway issued to it (None for anything else)."""
        form = await self._form(request)
        authenticated = await self._authenticator.authenticate(request.headers, form, address=address)
        caller.authenticated(authenticated)
        await self._admitted(authenticated)
        try:
            claims = self._verifier.verify(form.get("token", ""))
        except InvalidTokenError:
            return authenticated, None
        return authenticated, claims if claims.client_id == authenticated.client.client_id else None

    async def _admitted(self, authenticated: Authenticated) -> None:
        """Within the client's rate limit (every endpoint's requests count), or 429."""
        if self._admit is None:
            return
        throttled = await self._admit(authenticated.client.client_id, authenticated.agreement)
        if throttled is not None:
            retry = {"Retry-After": str(throttled.retry_after)}
            raise _Refusal(429, "temporarily_unavailable", throttled.message, headers=retry)

    async def _usable(self, claims: AccessClaims) -> bool:
        try:
            await self._revocations.agreement_of(client_id=claims.client_id, jti=claims.jti)
        except TokenRefusedError:
            return False
        return True

    # -- shared ------------------------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str]:
        if request.url.query:
            raise _Refusal(400, "invalid_request", "send parameters in the body, never in the URL")
        if len(request.headers.getlist("authorization")) > 1:
            raise _Refusal(400, "invalid_request", "send at most one Authorization header")
        if media_type(request) != "application/x-www-form-urlencoded":
            raise _Refusal(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        try:
            body = await read_body(request, limit=MAX_REQUEST_BYTES)
        except BodyTooLargeError:
            raise _Refusal(413, "invalid_request", "the request is too large") from None
        form = parse_form(body)
        if form is None:
            raise _Refusal(400, "invalid_request", "malformed body or a repeated parameter")
        return form

    def _nonce_header(self, dpop: bool) -> dict[str, str]:
        nonce = self._dpop.nonce() if dpop else None
        return {**_NO_STORE, **({"DPoP-Nonce": nonce} if nonce else {})}


def _answered(authenticated: Authenticated, claims: AccessClaims | None) -> TokenOutcome:
    return TokenOutcome(
        authenticated.client.client_id,
        authenticated.agreement.id,
        200,
        None,
        token_jti=claims.jti if claims else None,
        authenticated=True,
    )


def parse_form(body: bytes) -> dict[str, str] | None:
    """Parse a urlencoded body; None if malformed, if a value is not text, or if any parameter
    repeats. A parameter sent without a value is left out, as if it had not been sent (RFC 6749 3.2)."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form or "\x00" in key or "\x00" in value:
            return None
        form[key] = value
    return {key: value for key, value in form.items() if value}


def authorization_server_metadata(*, issuer: str, agreements: Mapping[str, Agreement]) -> dict[str, Any]:
    """RFC 8414 metadata. URLs come from the configured issuer, never from Host or X-Forwarded-*; the
    client authentication methods are those some agreement allows."""
    scopes = list(agreements)
    allowed = {method for a in agreements.values() for method in a.access.client_authentication}
    client_auth = [method for method in ("private_key_jwt", "client_secret_basic") if method in allowed]
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "grant_types_supported": [CLIENT_CREDENTIALS, TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": client_auth,
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        "response_types_supported": [],
        "scopes_supported": sorted(scopes),
        "access_token_signing_alg_values_supported": [ALGORITHM],
        "client_assertion_types_supported": [ASSERTION_TYPE],
    }
