"""POST /graphql: authenticate, establish purpose, evaluate the agreement, execute its view.

The order matters and reads top to bottom in `handle`:
  1. the access token, and for a DPoP-bound token a fresh proof by its key (401 with WWW-Authenticate
     before anything else is read);
  2. the token not revoked and its client not disabled (pushed to every process, or read per request);
  3. the body: JSON, one operation, bounded in size (no GET, no batching);
  4. the purpose context headers and the Decision (refusals carry a stable code);
  5. execution against the one schema of the client's agreement;
  6. errors cut down to code and safe message; unexpected ones logged by cause, never by content.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from gateway.db import is_unavailable
from gateway.http import (
    CLIENT_CLOSED_REQUEST,
    CLIENT_DISCONNECTED,
    BodyTooLargeError,
    ClientDisconnectedError,
    InvalidJsonError,
    graphql_error_response,
    json_response,
    media_type,
    parse_json,
    read_body,
)
from gateway.oauth import (
    AccessClaims,
    DPoPError,
    InvalidTokenError,
    Officer,
    ProofChecker,
    Revocations,
    TokenRefusedError,
    TokenVerifier,
    dpop_challenge,
)
from policies import Agreement, Decision, DenyCode, PurposeContext, evaluate
from resolvers import RefCodec
from schema import Disclosure, View, ViewContext, classify
from schema.ledger_records import LedgerReader

log = logging.getLogger("gateway.graphql")

REALM: Final = "partner-gateway"
_HEADER_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$")
PURPOSE_HEADERS: Final = (
    ("X-Acting-User", "acting_user"),
    ("X-Case-Reference", "case_reference"),
    ("X-Break-Glass-Reason", "break_glass_reason"),
)
_DENY_STATUS: Final = {
    DenyCode.FORBIDDEN: 403,
    DenyCode.AGREEMENT_NOT_IN_EFFECT: 403,
    DenyCode.AGREEMENT_EXPIRED: 403,
    DenyCode.AGREEMENT_REVIEW_OVERDUE: 403,
    DenyCode.PURPOSE_CONTEXT_REQUIRED: 400,
    DenyCode.ACTING_USER_NOT_VERIFIED: 403,
}
# Each may appear once: a second one would be resolved first-wins by one component and last-wins by another.
_SINGLE_HEADERS: Final = (
    "authorization",
    "dpop",
    "x-acting-user",
    "x-case-reference",
    "x-break-glass-reason",
)


@dataclass
class Outcome:
    """What happened to one request, for the audit ledger and the logs. Holds no personal data."""

    client_id: str | None = None
    agreement: Agreement | None = None
    decision: Decision | None = None
    purpose: PurposeContext = field(default_factory=PurposeContext)
    operation_name: str | None = None
    document_sha256: str | None = None
    status: int = 200
    error_codes: list[str] = field(default_factory=list)
    disclosures: list[Disclosure] = field(default_factory=list)
    token_jti: str | None = None
    officer: Officer | None = None  # named by a verified token: the officer every event records

    @property
    def code(self) -> str | None:
        return self.error_codes[0] if self.error_codes else None


class _Refusal(Exception):
    def __init__(self, response: JSONResponse, code: str) -> None:
        self.response = response
        self.code = code


class GraphQLEndpoint:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        views: Mapping[str, View],
        verifier: TokenVerifier,
        dpop: ProofChecker,
        revocations: Revocations,
        url: str,
        refs: Mapping[str, RefCodec],
        today: Callable[[], date],
        max_body_bytes: int,
        ledger: LedgerReader,
    ) -> None:
        """`url`: this endpoint's public URL, which DPoP proofs must name (never the Host header)."""
        self._engine = engine
        self._views = views
        self._verifier = verifier
        self._dpop = dpop
        self._revocations = revocations
        self._url = url
        self._refs = refs
        self._today = today
        self._max_body_bytes = max_body_bytes
        self._ledger = ledger

    async def handle(self, request: Request) -> tuple[JSONResponse, Outcome]:
        """Never raises: whatever happens, the outcome keeps what was verified before it happened."""
        outcome = Outcome()
        try:
            response = await self._handle(request, outcome)
        except _Refusal as refusal:
            response = refusal.response
            outcome.error_codes = [refusal.code]
        except Exception as error:
            if is_unavailable(error):
                log.warning("database unavailable", extra={"error_type": type(error).__name__})
                response, code = database_unavailable(), "DATABASE_UNAVAILABLE"
            else:
                log.error("graphql endpoint failed", exc_info=True, extra={"client_id": outcome.client_id})
                response = graphql_error_response(500, "INTERNAL_SERVER_ERROR", "Unexpected error.")
                code = "INTERNAL_SERVER_ERROR"
            outcome.error_codes = [code]
        outcome.status = response.status_code
        return response, outcome

    def identify(self, request: Request) -> Outcome:
        """Who is calling, if a valid token says so; nothing else is read. For requests refused
        before the endpoint runs (a wrong method), so their events still name a verified client."""
        outcome = Outcome()
        try:
            claims, _ = self._token(request)
        except _Refusal:
            return outcome
        outcome.client_id, outcome.token_jti = claims.client_id, claims.jti
        outcome.agreement = self._agreement_of(claims)
        return outcome

    def _agreement_of(self, claims: AccessClaims) -> Agreement | None:
        view = self._views.get(claims.scope)
        return view.agreement if view is not None else None

    async def _handle(self, request: Request, outcome: Outcome) -> JSONResponse:
        _single_headers(request)
        claims, raw = self._token(request)
        outcome.client_id = claims.client_id
        outcome.token_jti = claims.jti
        if claims.officer is not None:
            outcome.officer = claims.officer
            outcome.purpose = PurposeContext(acting_user=claims.officer.subject, acting_user_verified=True)
        outcome.agreement = self._agreement_of(claims)  # as the signed token says, until the client confirms
        try:
            bound_to = await self._revocations.agreement_of(client_id=claims.client_id, jti=claims.jti)
        except TokenRefusedError as refused:
            raise _unauthenticated("The access token is not valid.", "invalid_token", str(refused)) from None
        if bound_to != claims.scope:
            raise _unauthenticated(
                "The access token is not valid.", "invalid_token", "scope is not the client's agreement"
            )
        view = self._view_for(bound_to)
        outcome.agreement = view.agreement
        dpop_nonce = await self._possession(request, claims, raw, view.agreement)
        if request.url.query:
            # URLs end up in proxies' and servers' logs: nothing may travel in them.
            raise _bad_request(400, "BAD_REQUEST", "Send nothing in the URL: put the operation in the body.")
        payload = await self._payload(request)
        outcome.operation_name = _operation_name(payload)
        outcome.document_sha256 = _sha256(payload["query"])
        headers = _purpose_headers(request)
        outcome.purpose = _purpose_context(headers, claims.officer)
        # The officer the partner's identity provider named; a header may repeat it, never change it.
        # The event records the verified officer and the case, not the header's claim.
        if claims.officer is not None and headers["acting_user"] not in (None, claims.officer.subject):
            raise _bad_request(
                403, "ACTING_USER_MISMATCH", "X-Acting-User differs from the officer the token names."
            )
        decision = evaluate(view.agreement, outcome.purpose, today=self._today())
        outcome.decision = decision
        if not decision.allowed:
            assert decision.code is not None
            raise _Refusal(
                graphql_error_response(
                    _DENY_STATUS[decision.code], decision.code, _sentence(decision.reason)
                ),
                decision.code,
            )
        response = await self._execute(view, decision, payload, outcome)
        if dpop_nonce is not None:
            response.headers["DPoP-Nonce"] = dpop_nonce
        return response

    # -- 1 and 2: who is calling -----------------------------------------------------------------

    def _token(self, request: Request) -> tuple[AccessClaims, str]:
        header = request.headers.get("authorization")
        if not header:
            raise _unauthenticated("An access token is required.", None)
        scheme, _, raw = header.partition(" ")
        if scheme.lower() not in ("bearer", "dpop") or not raw.strip():
            raise _unauthenticated("Use the DPoP or Bearer scheme.", "invalid_request")
        try:
            claims = self._verifier.verify(raw.strip())
        except InvalidTokenError as error:
            raise _unauthenticated(
                "The access token is not valid.", "invalid_token", error.description
            ) from None
        if (scheme.lower() == "dpop") != (claims.jkt is not None):
            # RFC 9449 7.1: a bound token only with the DPoP scheme, the DPoP scheme only for a bound one.
            raise _unauthenticated(
                "The access token is not valid.",
                "invalid_token",
                "the scheme does not fit the token's binding",
            )
        return claims, raw.strip()

    async def _possession(
        self, request: Request, claims: AccessClaims, raw: str, agreement: Agreement
    ) -> str | None:
        """For a DPoP-bound token, the proof that the caller holds its key; the next nonce to use."""
        if claims.jkt is None:
            if agreement.access.binds_tokens:
                raise _unauthenticated(
                    "The access token is not valid.",
                    "invalid_token",
                    "this agreement's tokens are DPoP-bound",
                )
            return None
        try:
            proof = await self._dpop.check(
                request.headers.getlist("dpop"), method=request.method, url=self._url, access_token=raw
            )
        except DPoPError as error:
            raise _dpop_refusal(error.error, error.description, self._dpop.nonce()) from None
        if proof.jkt != claims.jkt:
            raise _dpop_refusal(
                "invalid_dpop_proof", "the proof is by another key than the token's", self._dpop.nonce()
            )
        return self._dpop.nonce()

    def _view_for(self, agreement_id: str) -> View:
        view = self._views.get(agreement_id)
        if view is None:
            # A token for an agreement that is no longer loaded: refuse, never fall back.
            raise _Refusal(
                graphql_error_response(403, "FORBIDDEN", "No agreement is in force for this client."),
                "FORBIDDEN",
            )
        return view

    # -- 3 and 4: what is asked, and why ---------------------------------------------------------

    async def _payload(self, request: Request) -> dict[str, Any]:
        if media_type(request) != "application/json":
            raise _bad_request(415, "UNSUPPORTED_MEDIA_TYPE", "Send the request as application/json.")
        try:
            body = await read_body(request, limit=self._max_body_bytes)
        except BodyTooLargeError:
            raise _bad_request(
                413, "PAYLOAD_TOO_LARGE", f"The body may be at most {self._max_body_bytes} bytes."
            ) from None
        except ClientDisconnectedError:
            # Nobody will read this answer; the ledger records that the client went away.
            raise _bad_request(
                CLIENT_CLOSED_REQUEST, CLIENT_DISCONNECTED, "The client disconnected."
            ) from None
        try:
            payload = parse_json(body)
        except InvalidJsonError:
            raise _bad_request(
                400, "BAD_REQUEST", "The body is not valid JSON, or holds text that is not valid Unicode."
            ) from None
        if isinstance(payload, list):
            raise _bad_request(400, "BATCHING_NOT_SUPPORTED", "Send one operation per request.")
        if not isinstance(payload, dict):
            raise _bad_request(400, "BAD_REQUEST", "The body must be a JSON object.")
        if not isinstance(payload.get("query"), str) or not payload["query"].strip():
            raise _bad_request(400, "BAD_REQUEST", "The body must have a non-empty 'query' string.")
        if payload.get("variables") is not None and not isinstance(payload["variables"], dict):
            raise _bad_request(400, "BAD_REQUEST", "'variables' must be a JSON object.")
        if payload.get("operationName") is not None and not isinstance(payload["operationName"], str):
            raise _bad_request(400, "BAD_REQUEST", "'operationName' must be a string.")
        return payload

    # -- 5 and 6: running the view ---------------------------------------------------------------

    async def _execute(
        self, view: View, decision: Decision, payload: dict[str, Any], outcome: Outcome
    ) -> JSONResponse:
        assert decision.agreement_id is not None
        context = ViewContext(
            decision=decision,
            refs=self._refs[decision.agreement_id],
            connect=self._engine.connect,
            ledger=self._ledger if view.agreement.is_ledger else None,
        )
        try:
            result = await view.schema.execute(
                payload["query"],
                variable_values=payload.get("variables"),
                context_value=context,
                operation_name=payload.get("operationName"),
                allowed_operation_types=(OperationType.QUERY,),
            )
        except InvalidOperationTypeError:
            raise _bad_request(400, "OPERATION_NOT_ALLOWED", "Only queries are allowed.") from None
        except (CannotGetOperationTypeError, MissingQueryError):
            raise _bad_request(
                400, "BAD_REQUEST", "Name one operation of the document in 'operationName'."
            ) from None

        if any(
            error.original_error and is_unavailable(error.original_error) for error in result.errors or []
        ):
            # Part of the answer could not be read: send none of it, and say why.
            raise _Refusal(database_unavailable(), "DATABASE_UNAVAILABLE")
        errors = [self._public_error(error, outcome) for error in result.errors or []]
        outcome.disclosures = context.disclosed_in(result.data)
        outcome.operation_name = context.operation_name or outcome.operation_name
        body: dict[str, Any] = {}
        executed = result.data is not None or any(error.path for error in result.errors or [])
        if executed:
            body["data"] = result.data
        if errors:
            body["errors"] = errors
        return json_response(body)

    def _public_error(self, error: GraphQLError, outcome: Outcome) -> dict[str, Any]:
        public = classify(error)
        outcome.error_codes.append(public.code)
        if not public.expected:
            incident = secrets.token_hex(8)
            original = error.original_error
            # The cause by type and stack frames: never the exception's message, which may quote data.
            log.error(
                "unexpected error while executing a view",
                extra={
                    "incident": incident,
                    "client_id": outcome.client_id,
                    "agreement": outcome.agreement.label if outcome.agreement else None,
                    "error_type": type(original).__name__ if original else type(error).__name__,
                    "frames": traceback.format_tb(original.__traceback__) if original else [],
                },
            )
        return public.as_dict(error)


def _dpop_refusal(error: str, description: str, nonce: str | None) -> _Refusal:
    headers = {"WWW-Authenticate": dpop_challenge(error, description, realm=REALM)}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    message = (
        "Send the request again with a DPoP proof that uses the new nonce."
        if error == "use_dpop_nonce"
        else ("The DPoP proof is not valid.")
    )
    return _Refusal(
        graphql_error_response(401, "UNAUTHENTICATED", message, headers=headers), "UNAUTHENTICATED"
    )


def _unauthenticated(message: str, error: str | None, description: str | None = None) -> _Refusal:
    """401 with both challenges (RFC 6750 and RFC 9449 7.1): the client picks the one it uses."""
    details = "".join(
        f', {name}="{value}"'
        for name, value in (("error", error), ("error_description", description))
        if value
    )
    challenges = f'{dpop_challenge(None, None, realm=REALM)}{details}, Bearer realm="{REALM}"{details}'
    return _Refusal(
        graphql_error_response(401, "UNAUTHENTICATED", message, headers={"WWW-Authenticate": challenges}),
        "UNAUTHENTICATED",
    )


def database_unavailable() -> JSONResponse:
    return graphql_error_response(
        503,
        "DATABASE_UNAVAILABLE",
        "The council's records cannot be read just now, so nothing is disclosed. Try again shortly.",
        headers={"Retry-After": "5"},
    )


def _bad_request(status: int, code: str, message: str) -> _Refusal:
    return _Refusal(graphql_error_response(status, code, message), code)


def _single_headers(request: Request) -> None:
    for name in _SINGLE_HEADERS:
        if len(request.headers.getlist(name)) > 1:
            raise _bad_request(400, "BAD_REQUEST", f"Send at most one {name} header.")


def _purpose_headers(request: Request) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for header, key in PURPOSE_HEADERS:
        raw = request.headers.get(header)
        if raw is None or not raw.strip():
            values[key] = None
            continue
        value = raw.strip()
        if not _HEADER_VALUE.match(value):
            raise _bad_request(400, "BAD_REQUEST", f"{header} must be 1 to 200 printable ASCII characters.")
        values[key] = value
    return values


def _purpose_context(values: dict[str, str | None], officer: Officer | None) -> PurposeContext:
    if officer is None:
        return PurposeContext(
            acting_user=values["acting_user"],
            case_reference=values["case_reference"],
            break_glass_reason=values["break_glass_reason"],
        )
    return PurposeContext(
        acting_user=officer.subject,
        case_reference=values["case_reference"],
        break_glass_reason=values["break_glass_reason"],
        acting_user_verified=True,
    )


def _operation_name(payload: dict[str, Any]) -> str | None:
    name = payload.get("operationName")
    return name[:100] if isinstance(name, str) else None


def _sentence(reason: str) -> str:
    return reason[:1].upper() + reason[1:] + "."


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
