"""The ASGI application, assembled top to bottom from Settings.

`create_app` loads and checks the agreements (a bad file stops start-up), builds one GraphQL view
per agreement, reads the signing keys and the ref secret, starts the audit ledger's writer and the
telemetry, and wires the routes. Tests pass their own engine, clock, keys, secret or telemetry;
production passes nothing but Settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.audit import (
    RequestAuditor,
    graphql_event,
    graphql_unavailable,
    token_event,
    token_unavailable,
)
from gateway.config import Settings, council_today
from gateway.db import create_engine, require_current_schema
from gateway.graphql import GraphQLEndpoint
from gateway.http import graphql_error_response, json_response
from gateway.keys import SigningKeys, derive_key, load_key_file
from gateway.ledger import LedgerWriter
from gateway.ledger_queries import LedgerQueries
from gateway.oauth import TokenEndpoint, authorization_server_metadata
from gateway.telemetry import Telemetry, TracingMiddleware, telemetry_from_environment, trace_sql
from gateway.tokens import TokenVerifier
from policies import Agreement, load_agreements
from resolvers import RefCodec
from schema import View, build_views

log = logging.getLogger("gateway.app")


@dataclass(frozen=True)
class Gateway:
    """The assembled parts, kept on `app.state.gateway` for the CLI and tests."""

    settings: Settings
    engine: AsyncEngine
    agreements: dict[str, Agreement]
    views: dict[str, View]
    signing: SigningKeys
    refs: dict[str, RefCodec]
    ledger: LedgerWriter | None
    telemetry: Telemetry


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    signing: SigningKeys | None = None,
    ref_secret: bytes | None = None,
    today: Callable[[], date] = council_today,
    telemetry: Telemetry | None = None,
    unaudited_for_benchmarks: bool = False,
) -> Starlette:
    """Build the app. `unaudited_for_benchmarks` switches the ledger off: only bench/ uses it,
    to measure what the ledger costs; no setting or variable can reach it."""
    agreements = load_agreements(settings.agreements_dir)
    owns_telemetry = telemetry is None
    telemetry = telemetry or telemetry_from_environment()
    views = build_views(agreements.values(), max_tokens=settings.max_query_tokens, tracer=telemetry.tracer)
    signing = signing or load_key_file(settings.signing_key_file)
    secret = ref_secret or settings.read_ref_secret()
    owns_engine = engine is None
    engine = engine or create_engine(settings.database_url, pool_size=settings.db_pool_size)
    # The ledger writes through connections of its own, so a burst of reads waiting for the request
    # pool cannot hold up the commits every response is waiting for.
    ledger_engine = create_engine(settings.database_url, pool_size=2) if owns_engine else engine
    trace_sql(engine, telemetry.tracer)
    if ledger_engine is not engine:
        trace_sql(ledger_engine, telemetry.tracer)
    ledger = None
    if not unaudited_for_benchmarks:

        def batch_committed(size: int, seconds: float) -> None:
            telemetry.audit_batch_size.record(size)
            telemetry.audit_commit_duration.record(seconds * 1000)

        ledger = LedgerWriter(
            ledger_engine,
            signing=signing,
            on_batch=batch_committed,
            on_failure=lambda: telemetry.audit_failures.add(1),
            tracer=telemetry.tracer,
        )
    gateway = Gateway(
        settings=settings,
        engine=engine,
        agreements=agreements,
        views=views,
        signing=signing,
        refs={agreement_id: RefCodec(secret, agreement_id) for agreement_id in agreements},
        ledger=ledger,
        telemetry=telemetry,
    )

    tokens = TokenEndpoint(
        engine=engine,
        signing=signing,
        issuer=settings.issuer,
        audience=settings.token_audience,
        ttl=settings.token_ttl_seconds,
    )
    graphql = GraphQLEndpoint(
        engine=engine,
        views=views,
        verifier=TokenVerifier(
            signing.verification,
            issuer=settings.issuer,
            audience=settings.token_audience,
            leeway=settings.token_leeway_seconds,
        ),
        refs=gateway.refs,
        today=today,
        max_body_bytes=settings.max_body_bytes,
        ledger=LedgerQueries(engine, agreements),
    )
    auditor = RequestAuditor(ledger, telemetry, telemetry_key=derive_key(secret, "telemetry-document-hash"))
    metadata = authorization_server_metadata(issuer=settings.issuer, scopes=list(agreements))

    # Every request to /oauth/token and /graphql ends in exactly one audit event, whatever happens.

    async def token(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response, outcome = await tokens.handle(request)
        except Exception:
            log.error("token endpoint failed", exc_info=True)
            failed = json_response(
                {"error": "server_error", "error_description": "unexpected error"}, status=500
            )
            return await auditor.seal_failure(
                "token", request, failed, code="server_error", started=started, unavailable=token_unavailable
            )
        draft = token_event(outcome, request, started, agreements.get(outcome.agreement_id or ""))
        verified = outcome.status == 200
        return await auditor.seal(
            draft, response, started=started, unavailable=token_unavailable, client_verified=verified
        )

    async def run_graphql(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response, outcome = await graphql.handle(request)
        except Exception:
            log.error("graphql endpoint failed", exc_info=True)
            failed = graphql_error_response(500, "INTERNAL_SERVER_ERROR", "Unexpected error.")
            return await auditor.seal_failure(
                "graphql", request, failed, code="INTERNAL_SERVER_ERROR", started=started,
                unavailable=graphql_unavailable,
            )  # fmt: skip
        draft = graphql_event(outcome, request, started)
        # Only a verified token sets the client id of a /graphql outcome.
        return await auditor.seal(
            draft, response, started=started, unavailable=graphql_unavailable, client_verified=True
        )

    async def graphql_wrong_method(request: Request) -> Response:
        refused = graphql_error_response(
            405, "METHOD_NOT_ALLOWED", "Use POST with a JSON body.", headers={"Allow": "POST"}
        )
        return await auditor.seal_failure(
            "graphql", request, refused, code="METHOD_NOT_ALLOWED", started=time.perf_counter(),
            unavailable=graphql_unavailable,
        )  # fmt: skip

    async def token_wrong_method(request: Request) -> Response:
        body = {"error": "invalid_request", "error_description": "use POST"}
        refused = json_response(body, status=405, headers={"Allow": "POST"})
        return await auditor.seal_failure(
            "token", request, refused, code="invalid_request", started=time.perf_counter(),
            unavailable=token_unavailable,
        )  # fmt: skip

    async def jwks(request: Request) -> Response:
        return JSONResponse(signing.public_jwks, headers={"Cache-Control": "public, max-age=300"})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(metadata, headers={"Cache-Control": "public, max-age=300"})

    async def healthz(request: Request) -> Response:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("health check: database unavailable", exc_info=True)
            return json_response({"status": "unavailable", "database": "unavailable"}, status=503)
        return json_response({"status": "ok", "database": "ok", "agreements": sorted(agreements)})

    async def livez(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return graphql_error_response(404, "NOT_FOUND", "No such endpoint.")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        allowed = getattr(exc, "headers", None) or {}  # Starlette names the allowed methods (RFC 9110)
        return graphql_error_response(405, "METHOD_NOT_ALLOWED", "Method not allowed.", headers=dict(allowed))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return graphql_error_response(500, "INTERNAL_SERVER_ERROR", "Unexpected error.")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Serving against a database the migrations have not reached would fail later and worse.
        await require_current_schema(engine)
        yield
        if ledger is not None:
            await ledger.close()  # commit what is queued and sign the chain head
        if owns_telemetry:
            telemetry.shutdown()
        await engine.dispose()
        if ledger_engine is not engine:
            await ledger_engine.dispose()

    app = Starlette(
        routes=[
            Route("/oauth/token", token, methods=["POST"]),
            Route("/oauth/token", token_wrong_method, methods=["GET", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            Route("/graphql", run_graphql, methods=["POST"]),
            Route("/graphql", graphql_wrong_method, methods=["GET", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", server_metadata, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/livez", livez, methods=["GET"]),
        ],
        middleware=[Middleware(TracingMiddleware, telemetry=telemetry)],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: unexpected},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
