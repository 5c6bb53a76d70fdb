"""The OAuth 2.0 authorization server for partner systems (authlib), on Starlette.

Client-credentials grant only; clients authenticate with `client_secret_basic`; access tokens are
RFC 9068 JWTs signed ES256 with `scope` = the client's one agreement, whatever the client asked for
(asking for any other scope is `invalid_scope`).

authlib is synchronous and has no Starlette integration. The endpoint reads and checks the body,
loads the client record from the database asynchronously, then runs authlib's grant, which needs no
further I/O: `query_client` is never called, because the client auth method below uses the client
loaded beforehand.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.db import is_unavailable
from gateway.http import (
    CLIENT_CLOSED_REQUEST,
    CLIENT_DISCONNECTED,
    NO_STORE,
    BodyTooLargeError,
    ClientDisconnectedError,
    json_response,
    media_type,
    read_body,
)
from gateway.keys import ALGORITHM, SigningKeys
from gateway.oauth.clients import ClientRecord, get_client

log = logging.getLogger("gateway.oauth")

MAX_TOKEN_REQUEST_BYTES: Final = 4096
# Client ids are made by `gateway clients add` from an agreement id and hex; anything else is not one.
CLIENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a path, not a password


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """What the token endpoint did, for the audit ledger: never the secret or the token."""

    client_id: str | None  # as claimed in the request; authenticated only when status is 200
    agreement_id: str | None
    status: int
    error: str | None
    token_jti: str | None = None


class _PartnerClient(ClientMixin):  # type: ignore[misc]
    def __init__(self, record: ClientRecord) -> None:
        self.record = record

    def get_client_id(self) -> str:
        return self.record.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return self.record.secret_matches(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" and endpoint == "token"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope: str | None) -> str:
        return self.record.agreement_id


class _TokenRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(
        self, uri: str, headers: Mapping[str, str], form: dict[str, str], client: _PartnerClient | None
    ):
        super().__init__("POST", uri, headers=headers)
        self.payload = BasicOAuth2Payload(form)
        self.known_client = client

    @property
    def form(self) -> dict[str, str]:
        return dict(self.payload.data)


def _client_secret_basic(_query_client: Any, request: _TokenRequest) -> _PartnerClient | None:
    client_id, secret = extract_basic_authorization(request.headers)
    client = request.known_client
    if client is None or not client_id or not secret or client.get_client_id() != client_id:
        return None
    return client if client.check_client_secret(secret) else None


class _ClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: Final = ["client_secret_basic"]

    def validate_requested_scope(self) -> None:
        requested = self.request.payload.scope
        allowed = self.request.client.get_allowed_scope(None)
        if requested is not None and requested.strip() != allowed:
            raise InvalidScopeError("this client may only request its own agreement as scope")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=self.client.get_allowed_scope(None), include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _TokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, *, issuer: str, audience: str, signing: SigningKeys, ttl: int) -> None:
        super().__init__(issuer=issuer, alg=ALGORITHM, expires_generator=lambda _client, _grant: ttl)
        self._audience = audience
        # Only the active key: authlib signs with any key of the right algorithm in the set it is given.
        self._keys = KeySet([signing.active])

    def get_jwks(self) -> KeySet:
        return self._keys

    def get_audiences(self, client: Any, user: Any, scope: Any) -> str:
        return self._audience

    def get_jti(self, client: Any, grant_type: Any, user: Any, scope: Any) -> str:
        return secrets.token_urlsafe(18)


class _Server(AuthorizationServer):  # type: ignore[misc]
    def query_client(self, client_id: str) -> None:
        return None  # clients are loaded before authlib runs; see _client_secret_basic

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        return None  # self-contained JWTs: nothing to store

    def create_oauth2_request(self, request: _TokenRequest) -> _TokenRequest:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class TokenEndpoint:
    def __init__(
        self, *, engine: AsyncEngine, signing: SigningKeys, issuer: str, audience: str, ttl: int
    ) -> None:
        self._engine = engine
        self._uri = issuer + TOKEN_PATH
        self._server = _Server()
        self._server.register_client_auth_method("client_secret_basic", _client_secret_basic)
        self._server.register_grant(_ClientCredentialsGrant)
        self._server.register_token_generator(
            "default", _TokenGenerator(issuer=issuer, audience=audience, signing=signing, ttl=ttl)
        )

    async def handle(self, request: Request) -> tuple[JSONResponse, TokenOutcome]:
        """A bug raises; a client that went away and a database that cannot answer do not."""
        try:
            return await self._handle(request)
        except ClientDisconnectedError:
            return self._error(CLIENT_CLOSED_REQUEST, CLIENT_DISCONNECTED, "the client disconnected")
        except Exception as error:
            if not is_unavailable(error):
                raise
            log.warning("database unavailable", extra={"error_type": type(error).__name__})
            body = {
                "error": "temporarily_unavailable",
                "error_description": "the client registry cannot be read",
            }
            response = json_response(body, status=503, headers={"Retry-After": "5"})
            return response, TokenOutcome(None, None, 503, "temporarily_unavailable")

    async def _handle(self, request: Request) -> tuple[JSONResponse, TokenOutcome]:
        if request.url.query:
            return self._error(400, "invalid_request", "send parameters in the body, never in the URL")
        if media_type(request) != "application/x-www-form-urlencoded":
            return self._error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        try:
            body = await read_body(request, limit=MAX_TOKEN_REQUEST_BYTES)
        except BodyTooLargeError:
            return self._error(413, "invalid_request", "the request is too large")
        form = _parse_form(body)
        if form is None:
            return self._error(400, "invalid_request", "malformed body or a repeated parameter")
        if "client_secret" in form or "client_assertion" in form:
            return self._error(400, "invalid_request", "authenticate with HTTP Basic (client_secret_basic)")

        try:
            client_id, _ = extract_basic_authorization(request.headers)
        except ValueError:  # undecodable Basic credentials (not base64, not UTF-8)
            return self._error(401, "invalid_client", "the client credentials cannot be read")
        record = None
        if client_id and CLIENT_ID.fullmatch(client_id):  # anything else names no client: never looked up
            async with self._engine.connect() as conn:
                record = await get_client(conn, client_id)
        client = _PartnerClient(record) if record is not None and record.is_enabled else None

        oauth_request = _TokenRequest(self._uri, request.headers, form, client)
        status, payload, headers = self._server.create_token_response(oauth_request)
        response = JSONResponse(payload, status_code=status, headers={**dict(headers), **NO_STORE})
        error = payload.get("error") if isinstance(payload, dict) else None
        token = payload.get("access_token") if isinstance(payload, dict) and status == 200 else None
        return response, TokenOutcome(
            client_id=client_id if client_id and CLIENT_ID.fullmatch(client_id) else None,
            agreement_id=record.agreement_id if record is not None else None,
            status=status,
            error=error,
            token_jti=_jti_of(token) if isinstance(token, str) else None,
        )

    def _error(self, status: int, error: str, description: str) -> tuple[JSONResponse, TokenOutcome]:
        body = {"error": error, "error_description": description}
        headers = {"WWW-Authenticate": f'Basic error="{error}"'} if status == 401 else None
        return json_response(body, status=status, headers=headers), TokenOutcome(None, None, status, error)


def _jti_of(access_token: str) -> str | None:
    """The jti of a token this endpoint has just signed, read back from its payload."""
    try:
        segment = access_token.split(".")[1]
        jti = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["jti"]
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    return jti if isinstance(jti, str) else None


def _parse_form(body: bytes) -> dict[str, str] | None:
    """Parse a urlencoded body; None if malformed or if any parameter repeats (RFC 6749 3.2)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return None
        form[key] = value
    return form


def authorization_server_metadata(*, issuer: str, scopes: list[str]) -> dict[str, Any]:
    """RFC 8414 metadata. URLs come from the configured issuer, never from Host or X-Forwarded-*."""
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "response_types_supported": [],
        "scopes_supported": sorted(scopes),
        "access_token_signing_alg_values_supported": [ALGORITHM],
    }
