"""The composition root: the ASGI application, assembled top to bottom from Settings.

`create_app` reads as the list of parts: the agreements (a bad file stops start-up), telemetry,
one GraphQL view per agreement, the signing keys and ref secret, the database engines, the audit
ledger's writer, the endpoints, and the routes that record every request. Tests pass their own
engine, clock, keys, secret or telemetry; production passes nothing but Settings.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from gateway.audit import (
    LedgerWriter,
    RequestAuditor,
    Witness,
    seal_orphans,
    witness_for,
)
from gateway.batches import BatchEndpoint
from gateway.bulk import BatchRunner
from gateway.config import Settings, council_today
from gateway.console import Console, require_demo_allowed
from gateway.db import create_engine, require_current_schema
from gateway.graphql import GraphQLEndpoint
from gateway.guard import Guard, SecurityLedger
from gateway.health import ReadinessProbe
from gateway.keys import SigningKeys, derive_key, signing_keys
from gateway.oauth import (
    TOKEN_PATH,
    AuthorizationServer,
    ClientAuthenticator,
    Nonces,
    OfficerIssuers,
    ProofChecker,
    Revocations,
    TokenIssuer,
    TokenVerifier,
    authorization_server_metadata,
)
from gateway.reviews import remember_versions
from gateway.rights import NoticeStore
from gateway.routes import EXCEPTION_HANDLERS, Endpoints, build_routes
from gateway.sharing import ContributionStore
from gateway.state import SharedState, shared_state
from gateway.telemetry import Telemetry, TracingMiddleware, telemetry_from_environment, trace_sql
from policies import Agreement, load_agreements
from policies.eligibility import load_eligibility
from resolvers import RefCodec
from schema import View, build_views


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
    state: SharedState
    revocations: Revocations
    guard: Guard


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    ledger_engine: AsyncEngine | None = None,
    signing: SigningKeys | None = None,
    ref_secret: bytes | None = None,
    today: Callable[[], date] = council_today,
    telemetry: Telemetry | None = None,
    unaudited_for_benchmarks: bool = False,
    general_path_only: bool = False,
    console_demo_sign_in: bool = False,
) -> Starlette:
    """Build the app. A test may pass `engine` for requests and `ledger_engine` for the ledger (by
    default the same engine). `unaudited_for_benchmarks` switches the ledger off: only bench/ uses it,
    to measure what the ledger costs; no setting or variable can reach it. `general_path_only`: every
    document through the views' strawberry schemas, none through the compiled path (for the tests
    that hold both paths to one answer). `console_demo_sign_in`: the console's local sign-in, for
    `gateway demo` only (refused unless the gateway serves a loopback address over plain http)."""
    if console_demo_sign_in:
        require_demo_allowed(settings)
    agreements = load_agreements(settings.agreements_dir)
    owned = _Owned(telemetry=telemetry is None, engine=engine is None, ledger_engine=ledger_engine is None)
    telemetry = telemetry or telemetry_from_environment()
    views = build_views(agreements.values(), max_tokens=settings.max_query_tokens, tracer=telemetry.tracer)
    signing = signing or signing_keys(settings)
    secret = ref_secret or settings.read_ref_secret()
    # The pool is fixed (gateway.db): one more than the setting, for the revocation listener, which
    # holds its connection for as long as the process runs. Its statements are the same few, run with
    # different values: planned once each (generic plans), not once per request.
    engine = engine or _engine(settings, pool_size=settings.db_pool_size + 1, generic_plans=True)
    # The ledger writes through connections of its own, so a burst of reads waiting for the request
    # pool cannot hold up the commits every response is waiting for: the writer's, and the rest for
    # start-up's sealing of orphaned chains, the readiness probe and the alerts.
    if ledger_engine is None:
        ledger_engine = _engine(settings, pool_size=4) if owned.engine else engine
    trace_sql(engine, telemetry.tracer)
    if ledger_engine is not engine:
        trace_sql(ledger_engine, telemetry.tracer)
    telemetry.prometheus.serve_agreements(agreements)

    def witness_failed() -> None:
        telemetry.witness_failures.add(1)
        telemetry.prometheus.witness_failures.inc()

    witness = witness_for(settings.witness, signing, on_failure=witness_failed)
    ledger = None if unaudited_for_benchmarks else _ledger_writer(ledger_engine, signing, telemetry, witness)
    state = shared_state(engine, settings.redis_url, issuer=settings.issuer)
    gateway = Gateway(
        settings=settings,
        engine=engine,
        agreements=agreements,
        views=views,
        signing=signing,
        refs={agreement_id: RefCodec(secret, agreement_id) for agreement_id in agreements},
        ledger=ledger,
        telemetry=telemetry,
        state=state,
        revocations=Revocations(engine),
        guard=Guard.build(
            settings, engine=engine, state=state, ledger=ledger, telemetry=telemetry, agreements=agreements
        ),
    )
    endpoints = _endpoints(
        gateway, today=today, secret=secret, ledger_engine=ledger_engine, compiled=not general_path_only
    )
    console = Console(
        settings=settings,
        engine=engine,
        ledger=ledger,
        agreements=agreements,
        signing=signing,
        secret=derive_key(secret, "console-session-cookie"),
        today=today,
        demo_sign_in=console_demo_sign_in,
        trusted_proxies=settings.trusted_networks,
    )
    routes: list[BaseRoute] = [*build_routes(endpoints), Mount("/console", app=console.app())]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TracingMiddleware, telemetry=telemetry)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan(
            gateway, ledger_engine, owned, witness, endpoints.batches.runner, endpoints.sharing
        ),
    )
    app.state.gateway = gateway
    app.state.batches = endpoints.batches.runner  # for tests and the benchmark: follow a job to its end
    app.state.sharing = endpoints.sharing  # and referrals matched in the background
    app.state.batches_endpoint = endpoints.batches
    return app


@dataclass(frozen=True)
class _Owned:
    """What the app created itself, and so closes at shutdown (tests close what they pass in)."""

    telemetry: bool
    engine: bool
    ledger_engine: bool


def _engine(settings: Settings, *, pool_size: int, generic_plans: bool = False) -> AsyncEngine:
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        generic_plans=generic_plans,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        lock_timeout_ms=settings.db_lock_timeout_ms,
    )


def _ledger_writer(
    engine: AsyncEngine, signing: SigningKeys, telemetry: Telemetry, witness: Witness | None
) -> LedgerWriter:
    def batch_committed(size: int, seconds: float) -> None:
        telemetry.audit_batch_size.record(size)
        telemetry.audit_commit_duration.record(seconds * 1000)
        telemetry.prometheus.audit_batch.observe(size)
        telemetry.prometheus.audit_commit.observe(seconds)

    def batch_failed() -> None:
        telemetry.audit_failures.add(1)
        telemetry.prometheus.audit_failures.inc()

    return LedgerWriter(
        engine,
        signing=signing,
        on_batch=batch_committed,
        on_failure=batch_failed,
        tracer=telemetry.tracer,
        witness=witness,
    )


def _endpoints(
    gateway: Gateway,
    *,
    today: Callable[[], date],
    secret: bytes,
    ledger_engine: AsyncEngine,
    compiled: bool,
) -> Endpoints:
    settings, engine, signing = gateway.settings, gateway.engine, gateway.signing
    leeway = settings.token_leeway_seconds
    verifier = TokenVerifier(signing, issuer=settings.issuer, audience=settings.token_audience, leeway=leeway)
    nonces = Nonces(derive_key(secret, "dpop-nonce")) if settings.dpop_nonce else None
    dpop = ProofChecker(replay=gateway.state, nonces=nonces, leeway=leeway)
    oauth = AuthorizationServer(
        engine=engine,
        issuer=settings.issuer,
        authenticator=ClientAuthenticator(
            engine=engine,
            agreements=gateway.agreements,
            audiences=frozenset({settings.issuer + TOKEN_PATH, settings.issuer}),
            state=gateway.state,
            leeway=leeway,
        ),
        issuer_of_tokens=TokenIssuer(
            signing, issuer=settings.issuer, audience=settings.token_audience, ttl=settings.token_ttl_seconds
        ),
        verifier=verifier,
        dpop=dpop,
        officers=OfficerIssuers(jwks_dir=settings.partner_jwks_dir, leeway=leeway),
        revocations=gateway.revocations,
        today=today,
        admit=gateway.guard.rates.client,
    )
    rules = load_eligibility(settings.eligibility_dir)  # a bad rule file stops start-up, like an agreement
    contributions = ContributionStore(engine, rules, today)
    graphql = GraphQLEndpoint(
        engine=engine,
        views=gateway.views,
        verifier=verifier,
        dpop=dpop,
        revocations=gateway.revocations,
        url=settings.issuer + "/graphql",
        refs=gateway.refs,
        today=today,
        max_body_bytes=settings.max_body_bytes,
        ledger=SecurityLedger(engine, gateway.agreements, rules),
        notices=NoticeStore(engine),
        guard=gateway.guard,
        contributions=contributions,
        unaudited_for_benchmarks=gateway.ledger is None,
        compiled=compiled,
    )
    batches = BatchEndpoint(
        engine=engine,
        graphql=graphql,
        runner=BatchRunner(
            engine=engine, ledger=gateway.ledger, agreements=gateway.agreements, refs=gateway.refs,
            contributions=contributions, today=today, chunk_rows=settings.batch_chunk_rows,
            lease_seconds=settings.batch_lease_seconds,
        ),
        issuer=settings.issuer,
        max_rows=settings.max_batch_rows,
        max_bytes=settings.max_batch_bytes,
    )  # fmt: skip
    auditor = RequestAuditor(
        gateway.ledger, gateway.telemetry, telemetry_key=derive_key(secret, "telemetry-document-hash")
    )
    readiness = ReadinessProbe(
        engine=engine,
        ledger_engine=ledger_engine if gateway.ledger is not None else None,
        state=gateway.state,
        redis_configured=settings.redis_url is not None,
        agreements=gateway.agreements,
        today=today,
    )
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return Endpoints(
        oauth=oauth,
        graphql=graphql,
        batches=batches,
        sharing=contributions,
        auditor=auditor,
        agreements=gateway.agreements,
        engine=engine,
        signing=signing,
        guard=gateway.guard,
        server_metadata=authorization_server_metadata(issuer=settings.issuer, agreements=gateway.agreements),
        readiness=readiness,
        metrics=gateway.telemetry.prometheus,
        metrics_token=token,
        trusted_proxies=settings.trusted_networks,
    )


def _lifespan(
    gateway: Gateway,
    ledger_engine: AsyncEngine,
    owned: _Owned,
    witness: Witness | None,
    batches: BatchRunner,
    sharing: ContributionStore,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Serving against a database the migrations have not reached would fail later and worse.
        await require_current_schema(gateway.engine)
        if gateway.ledger is not None:
            # Chains left open by writers that died (kill -9, a lost host) are sealed, so that
            # `audit verify --strict` passes again and shows where each writer stopped.
            sealer = f"gateway start-up on {socket.gethostname()} (pid {os.getpid()})"
            await seal_orphans(ledger_engine, signing=gateway.signing, witness=witness, sealer=sealer)
        # The text of each agreement as it runs now, kept for the evidence of its next review.
        await remember_versions(gateway.engine, gateway.agreements)
        await gateway.revocations.start()
        await gateway.guard.start()
        # What start-up made (modules, schemas, agreements) lives as long as the process: kept out of
        # the collector's view, so that a full collection under load does not walk it all again.
        gc.freeze()
        # What a stopped process left: reports and referrals whose event was written, batches part-way.
        await sharing.sweep()
        await batches.resume()
        yield
        await batches.close()  # a job left part-way is taken up by the next process, once its lease runs out
        await sharing.settled()  # referrals being matched (a few statements each)
        await gateway.guard.close()  # writes the refusal summaries still open
        await gateway.revocations.close()
        await gateway.state.close()
        if gateway.ledger is not None:
            await gateway.ledger.close()  # commit what is queued and sign the chain head
        if owned.telemetry:
            gateway.telemetry.shutdown()
        if owned.engine:
            await gateway.engine.dispose()
        if owned.ledger_engine and ledger_engine is not gateway.engine:
            await ledger_engine.dispose()

    return lifespan
