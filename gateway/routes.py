"""The HTTP routes, and the one audit event every request to /oauth/token or /graphql leaves.

Each audited route calls its endpoint, describes what happened as an `EventDraft`, and hands the
response to the `RequestAuditor`, which releases it only once the event is durable. A request that
fails in a way its endpoint did not foresee (a wrong method, a bug, a broken database) is still
recorded, with nothing about the caller that was not verified.

The well-known documents, the health probes and the metrics are not audited: they disclose nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.audit import AUDIT_HEADER, EventDraft, RequestAuditor, micros_since
from gateway.batches import BatchEndpoint
from gateway.graphql import GraphQLEndpoint, Outcome, throttled_response
from gateway.graphql import audit_unavailable as graphql_unavailable
from gateway.guard import Guard, Throttled
from gateway.health import ReadinessProbe
from gateway.http import CLIENT_DISCONNECTED, IPNetwork, client_address, graphql_error_response, json_response
from gateway.keys import SigningKeys
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.oauth import INTROSPECTION_PATH, REVOCATION_PATH, TOKEN_PATH, AuthorizationServer, TokenOutcome
from gateway.sharing import ContributionStore
from gateway.telemetry import trace_id_hex
from policies import Agreement

log = logging.getLogger("gateway.app")

_PUBLIC_CACHE: Final = {"Cache-Control": "public, max-age=300"}
# Refused before the view ran: the document was not executed, whatever the HTTP status.
_NOT_EXECUTED: Final = frozenset({"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "QUERY_TOO_COMPLEX"})


_OAuthEndpoint = Callable[[Request, "str | None"], Awaitable["tuple[Response, TokenOutcome]"]]


@dataclass(frozen=True)
class Endpoints:
    """What the routes serve, as the composition root assembled it."""

    oauth: AuthorizationServer
    graphql: GraphQLEndpoint
    batches: BatchEndpoint
    sharing: ContributionStore  # partners' reports and referrals: what start-up finishes of a stopped process
    auditor: RequestAuditor
    agreements: Mapping[str, Agreement]
    engine: AsyncEngine
    signing: SigningKeys  # read per request: the keys change while the gateway runs
    guard: Guard
    server_metadata: dict[str, Any]
    readiness: ReadinessProbe
    metrics: Metrics
    metrics_token: str | None = None  # None: /metrics answers loopback callers only
    trusted_proxies: tuple[IPNetwork, ...] = ()


def build_routes(endpoints: Endpoints) -> list[Route]:
    handlers = _Handlers(endpoints)
    return [
        # Every method reaches the audited handlers, so that TRACE, CONNECT or a made-up method is
        # answered 405 with an event too, not by Starlette before anything is recorded.
        Route(TOKEN_PATH, _AnyMethod(handlers.oauth_endpoint("token", endpoints.oauth.token))),
        Route(
            INTROSPECTION_PATH, _AnyMethod(handlers.oauth_endpoint("introspect", endpoints.oauth.introspect))
        ),
        Route(REVOCATION_PATH, _AnyMethod(handlers.oauth_endpoint("revoke", endpoints.oauth.revoke))),
        Route("/graphql", _AnyMethod(handlers.graphql_any_method)),
        Route("/batches", _AnyMethod(handlers.batches)),
        Route("/batches/{batch_id}", _AnyMethod(handlers.batches)),
        Route("/batches/{batch_id}/results", _AnyMethod(handlers.batches)),
        Route("/.well-known/jwks.json", handlers.jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", handlers.server_metadata, methods=["GET"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
        Route("/livez", handlers.livez, methods=["GET"]),
        Route("/readyz", handlers.readyz, methods=["GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
    ]


class _AnyMethod:
    """A request handler as a plain ASGI app: Starlette routes an ASGI app whatever the method, where
    it would limit a function to the methods listed (GET by default)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handler(Request(scope, receive, send))
        await response(scope, receive, send)


class _Handlers:
    def __init__(self, endpoints: Endpoints) -> None:
        self._e = endpoints

    # -- audited: every request ends in exactly one event, whatever happens -----------------------

    def oauth_endpoint(self, name: str, endpoint: _OAuthEndpoint) -> Callable[[Request], Awaitable[Response]]:
        """One of the authorization server's endpoints, audited under `name` (token, introspect, revoke)."""

        async def handle(request: Request) -> Response:
            if request.method != "POST":
                return await self.oauth_wrong_method(name, request)
            return await self.oauth(name, endpoint, request)

        return handle

    async def graphql_any_method(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.graphql(request)
        return await self.graphql_wrong_method(request)

    async def oauth(self, name: str, endpoint: _OAuthEndpoint, request: Request) -> Response:
        started = time.perf_counter()
        address = client_address(request, self._e.trusted_proxies)
        try:
            response, outcome = await endpoint(request, address)
        except Exception:
            log.error("authorization server failed", exc_info=True, extra={"endpoint": name})
            failed = json_response(
                {"error": "server_error", "error_description": "unexpected error"}, status=500
            )
            return await self._e.auditor.seal_failure(
                name, address, failed, code="server_error", started=started, unavailable=token_unavailable
            )
        draft = token_event(
            name, outcome, address, started, self._e.agreements.get(outcome.agreement_id or "")
        )
        if outcome.status == 429:
            # Throttled: past the limit, one summary event a minute stands for all such refusals.
            return self._summarised(f"{name}:address:{address}:{outcome.error}", draft, response)
        if 400 <= outcome.status < 500 and not outcome.authenticated:
            throttled = await self._address_throttled(address)
            if throttled is not None:
                refused = _oauth_throttled(throttled)
                return self._summarised(
                    f"{name}:address:{address}",
                    token_event(name, replace(outcome, status=429, error="temporarily_unavailable"),
                                address, started, None),
                    refused,
                )  # fmt: skip
        return await self._e.auditor.seal(
            draft,
            response,
            started=started,
            unavailable=token_unavailable,
            client_verified=outcome.authenticated,
        )

    async def graphql(self, request: Request) -> Response:
        started = time.perf_counter()
        address = client_address(request, self._e.trusted_proxies)
        try:
            response, outcome = await self._e.graphql.handle(request)
        except Exception:
            log.error("graphql endpoint failed", exc_info=True)
            failed = graphql_error_response(500, "INTERNAL_SERVER_ERROR", "Unexpected error.")
            return await self._e.auditor.seal_failure(
                "graphql", address, failed, code="INTERNAL_SERVER_ERROR", started=started,
                unavailable=graphql_unavailable,
            )  # fmt: skip
        draft = graphql_event(outcome, address, started)  # only a verified token sets its client id
        if outcome.summarise is not None:
            return self._summarised(outcome.summarise, draft, response)
        if 400 <= outcome.status < 500 and outcome.client_id is None:
            throttled = await self._address_throttled(address)
            if throttled is not None:
                return self._graphql_throttled(throttled, outcome, address, started)
        sealed = await self._e.auditor.seal(
            draft,
            response,
            started=started,
            unavailable=lambda: graphql_unavailable(outcome.media_type),
            client_verified=True,
        )
        if sealed.status_code < 500:
            await self._e.graphql.recorded(outcome)  # its event written: a partner's report now counts
        return sealed

    async def batches(self, request: Request) -> Response:
        """A partner's batch upload, or a read of its job: audited like /graphql (endpoint `batches`)."""
        started = time.perf_counter()
        address = client_address(request, self._e.trusted_proxies)
        response, outcome = await self._e.batches.handle(request)
        draft = replace(graphql_event(outcome, address, started), endpoint="batches")
        if outcome.summarise is not None:
            return self._summarised(outcome.summarise, draft, response)
        if 400 <= outcome.status < 500 and outcome.client_id is None:
            throttled = await self._address_throttled(address)
            if throttled is not None:
                outcome.status, outcome.error_codes = 429, [throttled.code]
                refused = throttled_response(throttled)
                return self._summarised(f"batches:address:{address}", replace(draft, http_status=429,
                                        outcome="denied", error_code=throttled.code), refused)  # fmt: skip
        sealed = await self._e.auditor.seal(
            draft, response, started=started, unavailable=graphql_unavailable, client_verified=True
        )
        if sealed.status_code < 400:
            await self._e.batches.recorded(outcome)  # its event written: an upload's job may start
        return sealed

    def _graphql_throttled(
        self, throttled: Throttled, outcome: Outcome, address: str | None, started: float
    ) -> Response:
        """Past the limit of refusals of callers that proved nothing: 429, and no row per request."""
        outcome.status, outcome.error_codes = 429, [throttled.code]
        draft = graphql_event(outcome, address, started)
        refused = throttled_response(throttled, outcome.media_type)
        return self._summarised(f"graphql:address:{address}", draft, refused)

    async def _address_throttled(self, address: str | None) -> Throttled | None:
        """Whether this address is past its refusals of callers that proved nothing (no valid token,
        no client authentication, a wrong method); counts this one if not."""
        if address is None:
            return None
        rates = self._e.guard.rates
        try:
            throttled = await rates.address_blocked(address)
            if throttled is None:
                await rates.unauthenticated(address)
        except Exception as error:
            # Without the counter the refusal is simply recorded on its own, as before the limit.
            log.warning("unauthenticated requests not counted", extra={"error_type": type(error).__name__})
            return None
        return throttled

    def _summarised(self, key: str, draft: EventDraft, response: Response) -> Response:
        response.headers[AUDIT_HEADER] = self._e.guard.summaries.count(key, draft)
        return response

    async def graphql_wrong_method(self, request: Request) -> Response:
        started = time.perf_counter()
        outcome = self._e.graphql.identify(request)
        refused = graphql_error_response(
            405, "METHOD_NOT_ALLOWED", "Use POST with a JSON body.", headers={"Allow": "POST"},
            media_type=outcome.media_type,
        )  # fmt: skip
        outcome.status, outcome.error_codes = 405, ["METHOD_NOT_ALLOWED"]
        address = client_address(request, self._e.trusted_proxies)
        # A wrong method proves nothing, even with a valid token: counted against the address.
        throttled = await self._address_throttled(address)
        if throttled is not None:
            return self._graphql_throttled(throttled, outcome, address, started)
        return await self._e.auditor.seal(
            graphql_event(outcome, address, started), refused, started=started,
            unavailable=lambda: graphql_unavailable(outcome.media_type), client_verified=True,
        )  # fmt: skip

    async def oauth_wrong_method(self, name: str, request: Request) -> Response:
        body = {"error": "invalid_request", "error_description": "use POST"}
        refused = json_response(body, status=405, headers={"Allow": "POST"})
        address = client_address(request, self._e.trusted_proxies)
        throttled = await self._address_throttled(address)
        if throttled is not None:
            draft = EventDraft(
                endpoint=name, outcome="denied", http_status=429, latency_us=0,
                error_code="temporarily_unavailable", client_address=address, trace_id=trace_id_hex(),
            )  # fmt: skip
            return self._summarised(f"{name}:address:{address}", draft, _oauth_throttled(throttled))
        return await self._e.auditor.seal_failure(
            name, address, refused, code="invalid_request", started=time.perf_counter(),
            unavailable=token_unavailable,
        )  # fmt: skip

    # -- not audited: nothing personal is disclosed -----------------------------------------------

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self._e.signing.public_jwks, headers=_PUBLIC_CACHE)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(self._e.server_metadata, headers=_PUBLIC_CACHE)

    async def healthz(self, request: Request) -> Response:
        try:
            async with self._e.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("health check: database unavailable", exc_info=True)
            return json_response({"status": "unavailable", "database": "unavailable"}, status=503)
        return json_response({"status": "ok", "database": "ok"})

    async def livez(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        readiness = await self._e.readiness.check()
        return json_response(readiness.body(), status=200 if readiness.ready else 503)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text, to the scraper: with the bearer token of GATEWAY_METRICS_TOKEN, or from
        a loopback address when no token is set. Counts only; no personal data, no unbounded label."""
        if not self._may_scrape(request):
            return json_response({"error": "forbidden"}, status=403)
        return Response(self._e.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    def _may_scrape(self, request: Request) -> bool:
        token = self._e.metrics_token
        if token is not None:
            offered = request.headers.get("authorization", "")
            return hmac.compare_digest(offered.encode(), f"Bearer {token}".encode())
        if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
            return False  # relayed by a proxy on this host: the caller is elsewhere
        peer = request.client.host if request.client else ""
        try:
            return ipaddress.ip_address(peer).is_loopback
        except ValueError:
            return False


# -- what Starlette answers when no route does ---------------------------------------------------


async def _not_found(request: Request, exc: Exception) -> Response:
    return graphql_error_response(404, "NOT_FOUND", "No such endpoint.")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    allowed = getattr(exc, "headers", None) or {}  # Starlette names the allowed methods (RFC 9110)
    return graphql_error_response(405, "METHOD_NOT_ALLOWED", "Method not allowed.", headers=dict(allowed))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return graphql_error_response(500, "INTERNAL_SERVER_ERROR", "Unexpected error.")


EXCEPTION_HANDLERS: Final = {404: _not_found, 405: _method_not_allowed, 500: _unexpected}


# -- the audit event of each endpoint's outcome --------------------------------------------------


def graphql_event(outcome: Outcome, client_address: str | None, started: float) -> EventDraft:
    agreement, decision = outcome.agreement, outcome.decision
    sent: dict[int, tuple[str, ...]] = {}
    withheld: set[str] = set()
    for disclosure in outcome.disclosures:
        prior = sent.get(disclosure.person_id)
        sent[disclosure.person_id] = disclosure.fields if prior is None else _joined(prior, disclosure.fields)
        if disclosure.withheld:
            withheld.update(disclosure.withheld)
    refused = outcome.status >= 400 or decision is None or not decision.allowed
    if outcome.code == CLIENT_DISCONNECTED:
        kind = "disconnected"
    elif outcome.status >= 500:
        kind = "error"
    elif (
        refused
        or _NOT_EXECUTED.intersection(outcome.error_codes)
        or (outcome.error_codes and not outcome.executed)
    ):
        kind = "denied"  # refused, or the document never ran (whatever status its media type gives that)
    else:
        kind = "error" if outcome.error_codes else "allowed"
    disclosed = {field for fields in set(sent.values()) for field in fields}
    draft = EventDraft(
        id=outcome.event_id,
        endpoint="graphql",
        outcome=kind,
        http_status=outcome.status,
        latency_us=micros_since(started),
        client_id=outcome.client_id,
        decision_rule=decision.rule if decision else None,
        acting_user=outcome.purpose.acting_user,
        officer_issuer=outcome.officer.issuer if outcome.officer else None,
        case_reference=outcome.purpose.case_reference,
        break_glass_reason=outcome.purpose.break_glass_reason,
        operation_name=outcome.operation_name,
        document_sha256=outcome.document_sha256,
        fields_disclosed=_in_view_order(tuple(disclosed), agreement),
        fields_withheld=_in_view_order(tuple(withheld), agreement),
        error_code=outcome.code,
        client_address=client_address,
        trace_id=trace_id_hex(),
        token_jti=outcome.token_jti,
        # Each person's fields in view order: the same record whichever root field answered first.
        disclosures=tuple(
            sorted((person_id, _in_view_order(fields, agreement)) for person_id, fields in sent.items())
        ),
    )
    return _with_agreement(draft, agreement)


def token_event(
    endpoint: str,
    outcome: TokenOutcome,
    client_address: str | None,
    started: float,
    agreement: Agreement | None,
) -> EventDraft:
    if outcome.error == CLIENT_DISCONNECTED:
        kind = "disconnected"
    else:
        kind = "allowed" if outcome.status == 200 else "error" if outcome.status >= 500 else "denied"
    draft = EventDraft(
        endpoint=endpoint,
        outcome=kind,
        http_status=outcome.status,
        latency_us=micros_since(started),
        client_id=outcome.client_id,
        error_code=outcome.error,
        client_address=client_address,
        trace_id=trace_id_hex(),
        token_jti=outcome.token_jti,
        acting_user=outcome.officer.subject if outcome.officer else None,
        officer_issuer=outcome.officer.issuer if outcome.officer else None,
    )
    return _with_agreement(draft, agreement)


def _oauth_throttled(throttled: Throttled) -> JSONResponse:
    body = {
        "error": "temporarily_unavailable",
        "error_description": "too many refused requests: try again later",
    }
    return json_response(body, status=429, headers={"Retry-After": str(throttled.retry_after)})


def token_unavailable() -> JSONResponse:
    body = {"error": "temporarily_unavailable", "error_description": "the audit ledger cannot be written"}
    return json_response(body, status=503, headers={"Retry-After": "5"})


def _with_agreement(draft: EventDraft, agreement: Agreement | None) -> EventDraft:
    if agreement is None:
        return draft
    return replace(
        draft,
        agreement_id=agreement.id,
        agreement_version=agreement.version,
        purpose=agreement.purpose,
        lawful_basis=agreement.lawful_basis,
    )


def _in_view_order(fields: tuple[str, ...], agreement: Agreement | None) -> tuple[str, ...]:
    return _ordered(fields, agreement.fields if agreement else ())


@lru_cache(maxsize=4096)
def _ordered(fields: tuple[str, ...], view: tuple[str, ...]) -> tuple[str, ...]:
    """`fields` without repeats, `ref` first, then in the view's order (any outside it last, by name)."""
    order = ["ref", *view]
    return tuple(sorted(set(fields), key=lambda f: (order.index(f) if f in order else len(order), f)))


def _joined(first: tuple[str, ...], then: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(f for f in then if f not in first)
