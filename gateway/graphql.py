"""POST /graphql: authenticate, establish purpose, evaluate the agreement, execute its view.

The order matters and reads top to bottom in `handle`:
  1. the access token, and for a DPoP-bound token a fresh proof by its key (401 with WWW-Authenticate
     before anything else is read);
  2. the token not revoked and its client not disabled (pushed to every process, or read per request);
  3. the body: JSON, one operation, bounded in size (no GET, no batching);
  4. the purpose context headers and the Decision (refusals carry a stable code);
  5. execution against the one schema of the client's agreement;
  6. errors cut down to code and safe message; unexpected ones logged by cause, never by content.

The answer's media type is chosen from the Accept header before anything else (GraphQL over HTTP):
application/json, as always, or application/graphql-response+json, which is answered 400 rather than
200 when the document never ran (it did not parse or validate, or its variables could not be
coerced), so that only an answer with `data` is a 2xx. Every other status is the same in both; an
Accept header that takes neither is refused 406 once the caller is known.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from gateway.audit import AuditUnavailableError
from gateway.db import is_unavailable
from gateway.guard import (
    Alert,
    Discharged,
    DocumentError,
    Guard,
    Throttled,
    document_hash,
    requested_hash,
    unmet,
)
from gateway.guard.alerts import BREAK_GLASS, QUOTA_EXCEEDED
from gateway.http import (
    APPLICATION_JSON,
    CLIENT_CLOSED_REQUEST,
    CLIENT_DISCONNECTED,
    BodyTooLargeError,
    ClientDisconnectedError,
    InvalidJsonError,
    graphql_error_response,
    json_response,
    media_type,
    negotiate,
    parse_json,
    read_body,
    with_media_type,
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
from gateway.sharing import ContributionStore
from policies import Agreement, Decision, DenyCode, Obligation, PurposeContext, evaluate
from resolvers import RefCodec
from schema import Disclosure, View, ViewContext, classify
from schema.contributions import FIELD as CONTRIBUTION_FIELD
from schema.ledger_records import LedgerReader
from schema.notice_records import NoticeReader
from schema.notices import FIELD as NOTICE_FIELD

log = logging.getLogger("gateway.graphql")
NOTICE_FIELDS: Final = (NOTICE_FIELD,)  # what a read of the Art 19 feed discloses of each person
CONTRIBUTION_FIELDS: Final = (CONTRIBUTION_FIELD,)  # what a partner's report records of the person

REALM: Final = "partner-gateway"
GRAPHQL_RESPONSE_JSON: Final = "application/graphql-response+json"
# What an answer may be sent as; the first is the default, for no Accept header and for `*/*`.
RESPONSE_MEDIA_TYPES: Final = (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON)
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
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the audit event's, known ahead
    summarise: str | None = None  # past a rate limit: the key its refusal is counted under
    alert_id: str | None = None  # the security alert this request raised
    media_type: str = APPLICATION_JSON  # the answer's, as the Accept header chose it
    executed: bool = False  # the document ran: the answer has `data` (null, partial or whole)
    awaiting_event: bool = False  # the view recorded a partner's report or referral
    contributed: bool = False  # ... and the answer is going out: the report counts once the event is written
    batch_id: str | None = (
        None  # an upload's job (gateway.batches): started once this request's event is written
    )

    @property
    def code(self) -> str | None:
        return self.error_codes[0] if self.error_codes else None


class Refusal(Exception):
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
        notices: NoticeReader,
        guard: Guard,
        contributions: ContributionStore | None = None,
        unaudited_for_benchmarks: bool = False,
        compiled: bool = True,
    ) -> None:
        """`url`: this endpoint's public URL, which DPoP proofs must name (never the Host header).
        `compiled`: answer what the compiled path covers by it (schema.compiled); off, every document
        takes the general path (for tests that hold the two to one answer)."""
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
        self._notices = notices
        self._contributions = contributions
        self._guard = guard
        # Only bench/ sets it (create_app's unaudited_for_benchmarks): no ledger, so the policy's record
        # obligations are waived, to measure what the ledger costs. Nothing else can reach it.
        self._unaudited_for_benchmarks = unaudited_for_benchmarks
        self._compiled = compiled

    async def handle(self, request: Request) -> tuple[JSONResponse, Outcome]:
        """Never raises: whatever happens, the outcome keeps what was verified before it happened."""
        accepted = accepted_media_type(request)
        outcome = Outcome(media_type=accepted or APPLICATION_JSON)
        response = await answered(
            self._handle(request, outcome, acceptable=accepted is not None), outcome, endpoint="graphql"
        )
        assert isinstance(response, JSONResponse)  # every answer of this endpoint, refusals included
        if (
            400 <= outcome.status < 500
            and outcome.status != 401
            and outcome.client_id
            and not outcome.summarise
        ):
            try:
                await self._guard.watch.refusal(outcome.client_id, outcome.agreement)
            except Exception as error:
                # The refusal stands whether or not the burst could be counted.
                log.warning("refusal not counted", extra={"error_type": type(error).__name__})
        # Counted above as application/json would have it: how an answer is sent changes no count.
        return _in_media_type(response, outcome), outcome

    def identify(self, request: Request) -> Outcome:
        """Who is calling, if a valid token says so, and the media type the caller accepts; nothing
        else is read. For requests refused before the endpoint runs (a wrong method), so their
        events still name a verified client."""
        outcome = Outcome(media_type=accepted_media_type(request) or APPLICATION_JSON)
        try:
            claims, _ = self._token(request)
        except Refusal:
            return outcome
        outcome.client_id, outcome.token_jti = claims.client_id, claims.jti
        outcome.agreement = self._agreement_of(claims)
        return outcome

    def _agreement_of(self, claims: AccessClaims) -> Agreement | None:
        view = self._views.get(claims.scope)
        return view.agreement if view is not None else None

    async def _handle(self, request: Request, outcome: Outcome, *, acceptable: bool) -> JSONResponse:
        view, claims, dpop_nonce = await self._caller(request, outcome, url=self._url)
        if not acceptable:
            raise _bad_request(
                406, "NOT_ACCEPTABLE", f"Accept {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}."
            )
        if request.url.query:
            # URLs end up in proxies' and servers' logs: nothing may travel in them.
            raise _bad_request(400, "BAD_REQUEST", "Send nothing in the URL: put the operation in the body.")
        payload = await self._payload(request)
        outcome.operation_name = _operation_name(payload)
        query = await self._document(payload, claims.client_id, view.agreement)
        outcome.document_sha256 = _sha256(query)
        decision = self._decide(request, outcome, view, claims)
        response = await self._answer(view, decision, query, payload, outcome)
        if dpop_nonce is not None:
            response.headers["DPoP-Nonce"] = dpop_nonce
        return response

    async def authorise(
        self, request: Request, outcome: Outcome, *, url: str
    ) -> tuple[View, Decision, str | None]:
        """Who is calling and under which view and decision, established exactly as for /graphql (token,
        proof of possession at `url`, client state, rate limits, purpose), for another endpoint of the
        partner's (its batches); raises `Refusal`. Returns the view, the decision and the next DPoP nonce."""
        view, claims, dpop_nonce = await self._caller(request, outcome, url=url)
        return view, self._decide(request, outcome, view, claims), dpop_nonce

    async def _caller(
        self, request: Request, outcome: Outcome, *, url: str
    ) -> tuple[View, AccessClaims, str | None]:
        _single_headers(request)
        claims, raw = self._token(request)
        outcome.client_id = claims.client_id
        outcome.token_jti = claims.jti
        if claims.officer is not None:
            outcome.officer = claims.officer
            outcome.purpose = PurposeContext(acting_user=claims.officer.subject, acting_user_verified=True)
        outcome.agreement = self._agreement_of(claims)  # as the signed token says, until the client confirms
        # Counted as soon as the token's signature holds, so that no refusal after it is free.
        throttled = await self._guard.rates.client(claims.client_id, outcome.agreement)
        if throttled is not None:
            outcome.summarise = f"graphql:client:{claims.client_id}:{throttled.code}"
            raise _throttled(throttled)
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
        dpop_nonce = await self._possession(request, claims, raw, view.agreement, url=url)
        await self._guard.watch.request(claims.client_id, view.agreement)
        return view, claims, dpop_nonce

    def _decide(self, request: Request, outcome: Outcome, view: View, claims: AccessClaims) -> Decision:
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
            raise Refusal(
                graphql_error_response(
                    _DENY_STATUS[decision.code], decision.code, _sentence(decision.reason)
                ),
                decision.code,
            )
        return decision

    # -- 5: the answer, within break-glass, quota and obligations ----------------------------------

    async def _answer(
        self, view: View, decision: Decision, query: str, payload: dict[str, Any], outcome: Outcome
    ) -> JSONResponse:
        purpose, officer, agreement = outcome.purpose, outcome.officer, view.agreement
        windows: dict[int, str] = {}
        if agreement.break_glass and officer is not None and purpose.case_reference:
            windows = await self._guard.windows.open_for(
                client_id=outcome.client_id or "",
                officer=officer.subject,
                case_reference=purpose.case_reference,
            )
        body, disclosures = await self._execute(view, decision, query, payload, outcome, frozenset(windows))
        if purpose.break_glass_reason and decision.rule == "break_glass":
            opened = await self._break_glass(view, outcome, disclosures)
            if opened is not None:
                # Answered again with the window open: the first answer withheld the person.
                windows = {**windows, opened: purpose.break_glass_reason}
                outcome.error_codes.clear()
                body, disclosures = await self._execute(
                    view, decision, query, payload, outcome, frozenset(windows)
                )
        used = sorted({d.person_id for d in disclosures} & set(windows))
        if used and decision.rule != "break_glass":
            # Within a window opened earlier: the answer holds what only break-glass may disclose,
            # so it is a break-glass disclosure too, with its alert before it leaves.
            outcome.decision = replace(
                decision,
                rule="break_glass",
                obligations=decision.obligations | {Obligation.ALERT_SECURITY},
            )
            outcome.purpose = replace(purpose, break_glass_reason=windows[used[0]])
            await self._alert_break_glass(view, outcome)
        # A notification names someone the client received before: telling it of a correction is not a new
        # person received, so the Art 19 feed never waits for tomorrow's quota.
        quota = await self._guard.people.take(
            outcome.client_id or "",
            agreement,
            {d.person_id for d in disclosures if d.fields not in (NOTICE_FIELDS, CONTRIBUTION_FIELDS)},
        )
        if quota is not None:
            await self._guard.alerts.raise_alert(
                Alert(
                    QUOTA_EXCEEDED,
                    client_id=outcome.client_id,
                    agreement=agreement,
                    about_event=outcome.event_id,
                ),
                once_per=86_400,
            )
            raise _throttled(quota)
        missing = (
            []
            if self._unaudited_for_benchmarks
            else unmet(
                outcome.decision or decision,
                Discharged(
                    recorded=True,  # the event is written (its disclosures too) before the answer leaves
                    acting_user=outcome.purpose.acting_user,
                    case_reference=outcome.purpose.case_reference,
                    alert_id=outcome.alert_id,
                ),
            )
        )
        if missing:
            log.error("obligations not met", extra={"obligations": missing, "client_id": outcome.client_id})
            raise Refusal(
                graphql_error_response(500, "OBLIGATION_NOT_MET", "The request could not be completed."),
                "OBLIGATION_NOT_MET",
            )
        outcome.disclosures = disclosures
        outcome.contributed = outcome.awaiting_event
        return json_response(body)

    async def recorded(self, outcome: Outcome) -> None:
        """The request's event is written: a report it made now counts (gateway.sharing). If this fails,
        the report stays pending and never counts; a retry with its key carries it."""
        if not outcome.contributed or self._contributions is None:
            return
        try:
            await self._contributions.recorded(outcome.event_id)
        except Exception as error:
            log.error("a contribution was not made evidence", extra={"error_type": type(error).__name__})

    async def _alert_break_glass(self, view: View, outcome: Outcome) -> None:
        """The BREAK_GLASS alert, written before the answer leaves, or no answer (503)."""
        purpose, officer = outcome.purpose, outcome.officer
        assert officer is not None
        try:
            outcome.alert_id = await self._guard.alerts.raise_alert(
                Alert(
                    BREAK_GLASS,
                    client_id=outcome.client_id,
                    agreement=view.agreement,
                    acting_user=officer.subject,
                    officer_issuer=officer.issuer,
                    case_reference=purpose.case_reference,
                    break_glass_reason=purpose.break_glass_reason,
                    about_event=outcome.event_id,
                )
            )
        except AuditUnavailableError:
            raise Refusal(audit_unavailable(), "AUDIT_UNAVAILABLE") from None

    async def _break_glass(self, view: View, outcome: Outcome, disclosures: list[Disclosure]) -> int | None:
        """Raise the alert before anything leaves, and open a window for the one protected person this
        request reached (household members stay withheld); the person opened, or None."""
        purpose, officer = outcome.purpose, outcome.officer
        assert purpose.break_glass_reason and purpose.case_reference and officer is not None
        protected = sorted({d.person_id for d in disclosures if d.withheld and not d.member})
        if len(protected) > 1:
            raise _bad_request(
                400,
                "BREAK_GLASS_ONE_PERSON",
                "Break-glass opens one person at a time: ask for that person alone.",
            )
        await self._alert_break_glass(view, outcome)
        if not protected:
            return None  # nothing protected was reached: nothing to open
        await self._guard.windows.open(
            event_id=outcome.event_id,
            client_id=outcome.client_id or "",
            agreement_id=view.agreement.id,
            officer=officer.subject,
            officer_issuer=officer.issuer,
            case_reference=purpose.case_reference,
            reason=purpose.break_glass_reason,
            person_id=protected[0],
        )
        return protected[0]

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
        self, request: Request, claims: AccessClaims, raw: str, agreement: Agreement, *, url: str
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
                request.headers.getlist("dpop"), method=request.method, url=url, access_token=raw
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
            raise Refusal(
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
        query = payload.get("query")
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise _bad_request(400, "BAD_REQUEST", "'query' must be a non-empty string.")
        if query is None and payload.get("documentId") is None and payload.get("extensions") is None:
            raise _bad_request(
                400,
                "BAD_REQUEST",
                "The body must have a 'query' string, or a 'documentId' naming a document.",
            )
        if payload.get("variables") is not None and not isinstance(payload["variables"], dict):
            raise _bad_request(400, "BAD_REQUEST", "'variables' must be a JSON object.")
        if payload.get("operationName") is not None and not isinstance(payload["operationName"], str):
            raise _bad_request(400, "BAD_REQUEST", "'operationName' must be a string.")
        return payload

    async def _document(self, payload: dict[str, Any], client_id: str, agreement: Agreement) -> str:
        """The document to run: sent as text, or named by hash and registered for this client; where
        the agreement trusts only registered documents, the text's hash must be registered too."""
        try:
            named = requested_hash(payload)
        except DocumentError as error:
            raise _bad_request(400, "BAD_REQUEST", _sentence(str(error))) from None
        text = payload.get("query")
        if isinstance(text, str) and len(text) > self._guard.max_document_chars:
            raise _bad_request(
                400,
                "QUERY_TOO_COMPLEX",
                f"The document may be at most {self._guard.max_document_chars} characters.",
            )
        if named is not None and isinstance(text, str) and document_hash(text) != named:
            raise _bad_request(
                400, "BAD_REQUEST", "The document's text does not have the hash it is sent with."
            )
        if named is None and not agreement.access.trusted_documents_only:
            assert isinstance(text, str)
            return text
        wanted = named or document_hash(str(text))
        registered = await self._guard.documents.text(client_id, wanted)
        if registered is None:
            if named is not None and text is None:
                raise _bad_request(
                    400, "DOCUMENT_NOT_FOUND", "No document with this id is registered for your client."
                )
            raise _bad_request(
                400,
                "DOCUMENT_NOT_TRUSTED",
                "Only documents registered for your client may run under this agreement.",
            )
        return registered

    # -- 6: running the view ---------------------------------------------------------------------

    async def _execute(
        self,
        view: View,
        decision: Decision,
        query: str,
        payload: dict[str, Any],
        outcome: Outcome,
        opened: frozenset[int],
    ) -> tuple[dict[str, Any], list[Disclosure]]:
        if opened:
            assert decision.scope is not None
            decision = replace(decision, scope=replace(decision.scope, opened=opened))
        assert decision.agreement_id is not None
        context = ViewContext(
            decision=decision,
            refs=self._refs[decision.agreement_id],
            connect=self._engine.connect,
            ledger=self._ledger if view.agreement.is_ledger else None,
            acting_user=outcome.purpose.acting_user,
            client_id=outcome.client_id,
            notices=None if view.agreement.is_ledger else self._notices,
            contributions=self._contributions if view.agreement.contributes else None,
            event_id=outcome.event_id,
        )
        try:
            return await self._run(view, query, payload, outcome, context)
        finally:
            # A report or referral was recorded: it counts once the event is written, if the answer leaves.
            outcome.awaiting_event = outcome.awaiting_event or context.awaiting_event

    async def _run(
        self, view: View, query: str, payload: dict[str, Any], outcome: Outcome, context: ViewContext
    ) -> tuple[dict[str, Any], list[Disclosure]]:
        if self._compiled and view.planner is not None:
            data = await view.planner.execute(
                context,
                query,
                payload.get("variables"),
                payload.get("operationName"),
                unavailable=is_unavailable,
            )
            if data is not None:
                outcome.operation_name = context.operation_name or outcome.operation_name
                outcome.executed = True
                return {"data": data}, context.disclosed_in(data)
        try:
            result = await view.schema.execute(
                query,
                variable_values=payload.get("variables"),
                context_value=context,
                operation_name=payload.get("operationName"),
                # Queries, and the few mutations each view has: the security team records break-glass
                # reviews, a partner acknowledges notifications. No subscriptions.
                allowed_operation_types=(OperationType.QUERY, OperationType.MUTATION),
            )
        except InvalidOperationTypeError:
            raise _bad_request(
                400, "OPERATION_NOT_ALLOWED", "Only queries and mutations are allowed."
            ) from None
        except (CannotGetOperationTypeError, MissingQueryError):
            raise _bad_request(
                400, "BAD_REQUEST", "Name one operation of the document in 'operationName'."
            ) from None

        if any(
            error.original_error and is_unavailable(error.original_error) for error in result.errors or []
        ):
            # Part of the answer could not be read: send none of it, and say why.
            raise Refusal(database_unavailable(), "DATABASE_UNAVAILABLE")
        errors = [self._public_error(error, outcome) for error in result.errors or []]
        outcome.operation_name = context.operation_name or outcome.operation_name
        body: dict[str, Any] = {}
        outcome.executed = result.data is not None or any(error.path for error in result.errors or [])
        if outcome.executed:
            body["data"] = result.data
        if errors:
            body["errors"] = errors
        return body, context.disclosed_in(result.data)

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


async def answered(step: Awaitable[Response], outcome: Outcome, *, endpoint: str) -> Response:
    """An endpoint's answer, never an exception: a refusal, an unavailable database (503) or a fault of ours
    (500, logged by cause) becomes the answer, its code in the outcome with the status."""
    try:
        response = await step
    except Refusal as refusal:
        response = refusal.response
        outcome.error_codes = [refusal.code]
    except Exception as error:
        if is_unavailable(error):
            log.warning("database unavailable", extra={"error_type": type(error).__name__})
            response, code = database_unavailable(), "DATABASE_UNAVAILABLE"
        else:
            log.error(f"{endpoint} endpoint failed", exc_info=True, extra={"client_id": outcome.client_id})
            response = graphql_error_response(500, "INTERNAL_SERVER_ERROR", "Unexpected error.")
            code = "INTERNAL_SERVER_ERROR"
        outcome.error_codes = [code]
    outcome.status = response.status_code
    return response


def _dpop_refusal(error: str, description: str, nonce: str | None) -> Refusal:
    headers = {"WWW-Authenticate": dpop_challenge(error, description, realm=REALM)}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    message = (
        "Send the request again with a DPoP proof that uses the new nonce."
        if error == "use_dpop_nonce"
        else ("The DPoP proof is not valid.")
    )
    return Refusal(
        graphql_error_response(401, "UNAUTHENTICATED", message, headers=headers), "UNAUTHENTICATED"
    )


def _unauthenticated(message: str, error: str | None, description: str | None = None) -> Refusal:
    """401 with both challenges (RFC 6750 and RFC 9449 7.1): the client picks the one it uses."""
    details = "".join(
        f', {name}="{value}"'
        for name, value in (("error", error), ("error_description", description))
        if value
    )
    challenges = f'{dpop_challenge(None, None, realm=REALM)}{details}, Bearer realm="{REALM}"{details}'
    return Refusal(
        graphql_error_response(401, "UNAUTHENTICATED", message, headers={"WWW-Authenticate": challenges}),
        "UNAUTHENTICATED",
    )


def accepted_media_type(request: Request) -> str | None:
    """What the Accept header chooses to receive the answer as; None when it takes neither type."""
    return negotiate(request.headers.getlist("accept"), RESPONSE_MEDIA_TYPES)


def _in_media_type(response: JSONResponse, outcome: Outcome) -> JSONResponse:
    """The answer as the client asked for it. As application/graphql-response+json, an answer whose
    document never ran has no `data` and MUST NOT be 2xx (GraphQL over HTTP): 400, as the ledger
    records it. As application/json every status stays as it is."""
    if outcome.media_type == GRAPHQL_RESPONSE_JSON and response.status_code == 200 and not outcome.executed:
        response.status_code = outcome.status = 400
    return with_media_type(response, outcome.media_type)


def database_unavailable() -> JSONResponse:
    return graphql_error_response(
        503,
        "DATABASE_UNAVAILABLE",
        "The council's records cannot be read just now, so nothing is disclosed. Try again shortly.",
        headers={"Retry-After": "5"},
    )


def throttled_response(throttled: Throttled, media_type: str = APPLICATION_JSON) -> JSONResponse:
    headers = {"Retry-After": str(throttled.retry_after)}
    return graphql_error_response(
        429, throttled.code, throttled.message, headers=headers, media_type=media_type
    )


def _throttled(throttled: Throttled) -> Refusal:
    return Refusal(throttled_response(throttled), throttled.code)


def audit_unavailable(media_type: str = APPLICATION_JSON) -> JSONResponse:
    return graphql_error_response(
        503,
        "AUDIT_UNAVAILABLE",
        "The audit ledger cannot be written, so nothing is disclosed. Try again shortly.",
        headers={"Retry-After": "5"},
        media_type=media_type,
    )


def _bad_request(status: int, code: str, message: str) -> Refusal:
    return Refusal(graphql_error_response(status, code, message), code)


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
