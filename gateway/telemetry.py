"""OpenTelemetry traces and metrics for operating the gateway, with no personal data in them.

Spans: one SERVER span per HTTP request (named by route, never by URL: a query string could carry
anything), GraphQL parse/validate/execute (schema.tracing), and one CLIENT span per SQL statement
(the statement text with placeholders, never bound values). Attributes are identifiers and counts:
client id, agreement, operation name, document hash, people count, audit event id. Exceptions are
never recorded on spans, only their type as the status, because their messages can quote data.

The contrib ASGI and SQLAlchemy instrumentations are not used for that reason: the first records
the full URL, the second writes str(exception) (a driver's message may quote a value) into the
span status and needs a dependency-check override on SQLAlchemy 2.1.

Export is off unless the standard variables ask for it: OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER
= otlp, or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT and the per-signal variants). The exporter
reads its endpoint, headers and protocol settings from the same variables. A signal that is not
exported is not recorded either (spans are sampled out, keeping their trace ids for the ledger and the
logs; measurements go to a no-op meter): recording what nothing reads cost a tenth of a lookup's CPU.
OTEL_SDK_DISABLED=true turns telemetry off altogether. Tests pass their own providers with in-memory
exporters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics

SERVICE_NAME: Final = "partner-gateway"
ROUTES: Final = frozenset({
    "/graphql", "/oauth/token", "/oauth/introspect", "/oauth/revoke", "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server", "/healthz", "/livez", "/readyz", "/metrics",
})  # fmt: skip
_INSTRUMENTATION: Final = "gateway"


@dataclass(frozen=True)
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: Tracer  # spans within a request (GraphQL, SQL, the ledger's commits)
    meter: Meter
    requests: Counter
    request_duration: Histogram
    people_disclosed: Counter
    audit_batch_size: Histogram
    audit_commit_duration: Histogram
    audit_failures: Counter
    witness_failures: Counter
    alerts: Counter
    refusals_summarised: Counter
    prometheus: Metrics  # the same events for /metrics, in Prometheus's own registry
    request_tracer: Tracer  # each request's SERVER span: its trace id is the audit event's

    @classmethod
    def build(
        cls, tracer_provider: TracerProvider, meter_provider: MeterProvider, *, inner_spans: bool = True
    ) -> Telemetry:
        """`inner_spans`: False when nothing records spans, so that a request makes only the SERVER span
        whose ids the ledger and the logs carry, and nothing for the spans that would sit under it."""
        meter = meter_provider.get_meter(_INSTRUMENTATION)
        request_tracer = tracer_provider.get_tracer(_INSTRUMENTATION)
        return cls(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            tracer=request_tracer if inner_spans else trace.NoOpTracer(),
            request_tracer=request_tracer,
            meter=meter,
            requests=meter.create_counter(
                "gateway.requests", description="Requests, by endpoint, agreement and outcome"
            ),
            request_duration=meter.create_histogram(
                "gateway.request.duration", unit="ms", description="Time to answer, audit commit included"
            ),
            people_disclosed=meter.create_counter(
                "gateway.people.disclosed", description="People sent, by agreement"
            ),
            audit_batch_size=meter.create_histogram(
                "gateway.audit.batch.size", description="Events per group commit"
            ),
            audit_commit_duration=meter.create_histogram("gateway.audit.commit.duration", unit="ms"),
            audit_failures=meter.create_counter(
                "gateway.audit.failures", description="Batches that could not commit"
            ),
            witness_failures=meter.create_counter(
                "gateway.audit.witness.failures", description="Witness records that could not be appended yet"
            ),
            alerts=meter.create_counter("gateway.alerts", description="Alerts raised, by kind and agreement"),
            refusals_summarised=meter.create_counter(
                "gateway.refusals.summarised",
                description="Refusals past a rate limit, counted into one summary event a minute",
            ),
            prometheus=Metrics(),
        )

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            stop = getattr(provider, "shutdown", None)
            if callable(stop):
                stop()


def telemetry_from_environment(environ: Mapping[str, str] = os.environ) -> Telemetry:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Telemetry.build(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    if _wants_otlp(environ, "TRACES"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider = SdkTracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        # Nothing would receive a span: none is recorded. Every request still has its trace and span
        # ids (the SDK makes them for a span it does not sample), which the audit event and the log
        # lines carry; the spans that would sit under it are not made at all (Telemetry.build).
        tracer_provider = SdkTracerProvider(resource=resource, sampler=ALWAYS_OFF)
    meter_provider: MeterProvider = metrics.NoOpMeterProvider()  # nothing would read a measurement
    if _wants_otlp(environ, "METRICS"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        meter_provider = SdkMeterProvider(
            resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
        )
    return Telemetry.build(tracer_provider, meter_provider, inner_spans=_wants_otlp(environ, "TRACES"))


def _wants_otlp(environ: Mapping[str, str], signal: str) -> bool:
    chosen = environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if chosen:
        return "otlp" in {part.strip() for part in chosen.split(",")}
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def trace_id_hex(span: trace.Span | None = None) -> str | None:
    context = (span or trace.get_current_span()).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class TracingMiddleware:
    """A SERVER span per HTTP request, named by method and route; never the URL or its query string.

    Incoming trace context is not adopted: a partner could otherwise choose trace ids that collide
    with other requests' in the audit ledger. Each request starts a trace of its own.
    """

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        route = scope["path"] if scope["path"] in ROUTES else "(other)"
        status = {"code": 500}

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        attributes = {
            "http.request.method": method,
            "http.route": route,
            "url.scheme": str(scope.get("scheme", "http")),
        }
        with self.telemetry.request_tracer.start_as_current_span(
            f"{method} {route}",
            kind=SpanKind.SERVER,
            attributes=attributes,
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self.app(scope, receive, send_with_status)
            except BaseException as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            finally:
                span.set_attribute("http.response.status_code", status["code"])
                if status["code"] >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def trace_sql(engine: AsyncEngine, tracer: Tracer) -> None:
    """A CLIENT span per SQL statement on this engine: statement text with placeholders only. With a
    tracer that records nothing, no listener at all: a statement then pays nothing for its span."""
    if isinstance(tracer, trace.NoOpTracer):
        return
    sync_engine = engine.sync_engine
    system = sync_engine.dialect.name
    # Each call keeps its spans under its own attribute: two apps may share an engine in tests.
    slot = f"_gateway_span_{id(tracer):x}"

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            f"{operation} {system}",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": system, "db.operation.name": operation, "db.query.text": statement},
        )
        setattr(context, slot, span)

    def after(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        span = getattr(context, slot, None)
        if span is not None:
            span.end()

    def failed(exception_context: Any) -> None:
        execution = exception_context.execution_context
        span = getattr(execution, slot, None) if execution is not None else None
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, type(exception_context.original_exception).__name__))
            span.end()

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", failed)


class TraceIdFilter(logging.Filter):
    """Adds the current trace and span ids to every log record, to go from a log line to its trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
