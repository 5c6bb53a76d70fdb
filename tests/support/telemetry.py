"""The gateway with its telemetry captured in memory, and a scanner for personal values in it.

`telemetry_rig` builds the app on a fresh engine with an in-memory span exporter and metric reader;
`captured_logs` points the gateway's JSON logging at a buffer and puts the process's logging back
afterwards; `PersonalValues` collects the personal values a workload saw and finds them in text.
"""

from __future__ import annotations

import gc
import io
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import create_engine
from gateway.keys import SigningKeys
from gateway.logs import _QUIET, configure_logging, uvicorn_log_config
from gateway.telemetry import Telemetry
from tests.conftest import FIXED_TODAY, REF_SECRET, make_partners
from tests.support.identity import RegisteredClient, TestIssuer
from tests.support.oracle import Oracle, Person
from tests.support.partners import Partner
from tests.support.population import EdgeCases

# Response keys whose string values are personal data. The town is left out: "London" proves nothing.
PERSONAL_KEYS = frozenset(
    {
        "givenName",
        "familyName",
        "dateOfBirth",
        "postcode",
        "line1",
        "line2",
        "uprn",
        "phone",
        "email",
        "school",
    }
)
GENERIC = frozenset({"London", "Westminster", "Paddington", "Pimlico"})
POLICE = "police-prevention"
PAGE = "query($first: Int) { people(first: $first) { edges { node { ref } } } }"
FIND_POLICE = "query($f: String!, $d: Date!) { findPeople(familyName: $f, dateOfBirth: $d) { %s } }"
FIND_YOUTH = FIND_POLICE
FIND_MASH = (
    "query($g: String!, $f: String!, $d: Date!) "
    "{ findPeople(givenName: $g, familyName: $f, dateOfBirth: $d) { %s } }"
)
ADDRESS = "address { line1 line2 town postcode }"
# Loggers configure_logging touches, and the test client's own (httpx logs every URL it requests).
_TOUCHED = (*_QUIET, "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore")


@dataclass
class Rig:
    app: Starlette
    engine: AsyncEngine
    http: httpx.AsyncClient
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    partner: Callable[[str], Partner]

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def metric_points(self) -> dict[str, list[Any]]:
        """Metric name -> its data points (cumulative since the rig was built)."""
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


@asynccontextmanager
async def telemetry_rig(
    settings: Settings,
    signing: SigningKeys,
    database_url: str,
    registered: dict[str, RegisteredClient],
    issuers: dict[str, TestIssuer],
    *,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[Rig]:
    """An app whose spans and metrics are kept in memory; or, given `telemetry`, one that uses it (its
    spans and metric points then reach the rig only if that telemetry sends them here)."""
    engine = create_engine(database_url)
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    if telemetry is None:
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        telemetry = Telemetry.build(tracer_provider, MeterProvider(metric_readers=[reader]))
    app = create_app(
        settings,
        engine=engine,
        signing=signing,
        ref_secret=REF_SECRET,
        today=lambda: FIXED_TODAY,
        telemetry=telemetry,
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Rig(
                app, engine, client, exporter, reader, make_partners(client, registered, issuers, engine)
            )
    finally:
        await app.state.gateway.ledger.close()
        await engine.dispose()
        telemetry.shutdown()


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """The gateway's JSON log lines at DEBUG, in a buffer; the process's logging restored afterwards."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        name: (lg.level, lg.handlers[:], lg.propagate)
        for name in _TOUCHED
        for lg in [logging.getLogger(name)]
    }
    buffer = io.StringIO()
    try:
        configure_logging("DEBUG", stream=buffer)
        # The test's HTTP client is not the gateway: its request log would quote the test's own URLs.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        yield buffer
    finally:
        handlers, level = saved_root
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (lvl, handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(lvl)
            logger.handlers[:] = handlers
            logger.propagate = propagate


@contextmanager
def uvicorn_as_served(app: Starlette) -> Iterator[str]:
    """uvicorn on 127.0.0.1 configured as `gateway serve` configures it (gateway/cli/serve.py `serve_app`)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=uvicorn_log_config(),
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-telemetry-test", daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class PersonalValues:
    """Every personal value the workload saw in a response or sent in a request."""

    values: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)  # response keys that carried at least one value

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and len(value) >= 3 and value not in GENERIC:
                self.values.add(value)

    def add_from(self, body: Any) -> None:
        """Collect the personal fields of a GraphQL response body, however deep."""
        if isinstance(body, dict):
            for key, value in body.items():
                if key in PERSONAL_KEYS and isinstance(value, str):
                    self.add(value)
                    self.keys.add(key)
                else:
                    self.add_from(value)
        elif isinstance(body, list):
            for item in body:
                self.add_from(item)

    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(re.escape(v) for v in sorted(self.values, key=len, reverse=True))
        return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")

    def leaks(self, places: Iterable[tuple[str, str]]) -> list[str]:
        """'where: value' for every place whose text holds a personal value."""
        if not self.values:
            return []
        pattern = self.pattern()
        return [
            f"{where}: {found.group(0)!r} in {text!r}"
            for where, text in places
            for found in [pattern.search(text)]
            if found
        ]


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " | ".join(str(v) for v in value)
    return str(value)


def span_places(spans: Iterable[ReadableSpan]) -> Iterator[tuple[str, str]]:
    """Every piece of text a span carries, with a label naming the span and the attribute."""
    for span in spans:
        label = f"span {span.name!r}"
        yield f"{label} name", span.name
        for key, value in (span.attributes or {}).items():
            yield f"{label} attribute {key}", _text(value)
        for event in span.events:
            yield f"{label} event name", event.name
            for key, value in (event.attributes or {}).items():
                yield f"{label} event {event.name!r} attribute {key}", _text(value)
        for link in span.links:
            for key, value in (link.attributes or {}).items():
                yield f"{label} link attribute {key}", _text(value)
        if span.status.description:
            yield f"{label} status", span.status.description
        for key, value in span.resource.attributes.items():
            yield f"{label} resource {key}", _text(value)


def metric_places(points: dict[str, list[Any]]) -> Iterator[tuple[str, str]]:
    for name, data_points in points.items():
        yield "metric name", name
        for point in data_points:
            for key, value in (point.attributes or {}).items():
                yield f"metric {name} attribute {key}", _text(value)
            for exemplar in getattr(point, "exemplars", None) or ():
                for key, value in (exemplar.filtered_attributes or {}).items():
                    yield f"metric {name} exemplar attribute {key}", _text(value)


@dataclass(frozen=True)
class Call:
    agreement: str
    query: str
    variables: dict[str, Any] | None = None
    status: int = 200
    fails: bool = False  # the body carries errors
    options: dict[str, Any] = field(default_factory=dict)


def _literal_find(agreement: str, person: Person, selection: str, **options: Any) -> Call:
    """findPeople with the person's true values written into the document as literals."""
    given = f'givenName: "{person.given_name}", ' if agreement == "mash-safeguarding" else ""
    arguments = f'{given}familyName: "{person.family_name}", dateOfBirth: "{person.date_of_birth}"'
    return Call(agreement, f"{{ findPeople({arguments}) {{ {selection} }} }}", options=options)


def _page(agreement: str, size: int, selection: str) -> Call:
    return Call(agreement, f"{{ people(first: {size}) {{ edges {{ cursor node {{ {selection} }} }} }} }}")


def _succeeding(people: dict[str, Person], ref: str) -> list[Call]:
    plain, child, refuge, mash = (
        people[k] for k in ("cohort_plain", "child_17", "refuge_adult", "mash_adult")
    )
    mash_all = f"givenName familyName dateOfBirth {ADDRESS} uprn phone email school programmeStatus familyRef"
    mash_all += f" members {{ givenName familyName dateOfBirth school email phone uprn {ADDRESS} }}"
    youth_all = f"ref givenName familyName dateOfBirth school {ADDRESS} programmeStatus"
    break_glass = {
        "X-Break-Glass-Reason": f"risk to life: {refuge.given_name} {refuge.family_name}",
        # A window stays open for the officer on this case: a case of its own keeps other tests apart.
        "X-Case-Reference": f"CASE-{secrets.token_hex(4)}",
    }
    aliased = (
        "query Listing { a: people(first: 30) { edges { node { ...P } } } "
        "b: people(first: 5) { edges { node { n: familyName d: dateOfBirth } } } } "
        "fragment P on Person { ref givenName familyName dateOfBirth postcode }"
    )
    fragment = "fragment O on Person { ref givenName familyName dateOfBirth assessmentOutcome familyRef }"
    return [
        _page(POLICE, 100, "ref givenName familyName dateOfBirth postcode"),
        Call(POLICE, aliased),
        Call(
            POLICE,
            FIND_POLICE % "ref givenName postcode",
            {"f": plain.family_name, "d": str(plain.date_of_birth)},
        ),
        _literal_find(POLICE, plain, "ref familyName dateOfBirth postcode"),
        Call(POLICE, "query($r: ID!) { person(ref: $r) { givenName familyName postcode } }", {"r": ref}),
        _page("dwp-worklessness", 200, f"ref uprn {ADDRESS}"),
        Call("ons-evaluation", f"{{ people(first: 150) {{ edges {{ node {{ ...O }} }} }} }} {fragment}"),
        _page("family-hub-outreach", 100, f"ref givenName familyName phone email {ADDRESS}"),
        Call(
            "youth-justice", FIND_YOUTH % youth_all, {"f": child.family_name, "d": str(child.date_of_birth)}
        ),
        _literal_find("youth-justice", child, youth_all),
        Call(
            "mash-safeguarding",
            FIND_MASH % mash_all,
            {"g": mash.given_name, "f": mash.family_name, "d": str(mash.date_of_birth)},
        ),
        _literal_find("mash-safeguarding", refuge, mash_all, headers=break_glass),
    ]


def _failing(people: dict[str, Person]) -> list[Call]:
    plain, child = people["cohort_plain"], people["child_17"]
    dob = str(plain.date_of_birth)
    syntax = f'{{ findPeople(familyName: {plain.family_name} dateOfBirth: "{dob}" '
    impossible = f'{{ findPeople(familyName: "{child.family_name}", dateOfBirth: "2011-02-30") {{ ref }} }}'
    unknown = (
        f'{{ findPeople(givenName: "{plain.given_name}", familyName: "{plain.family_name}", '
        f'dateOfBirth: "{dob}") {{ ref nationalInsuranceNumber }} }}'
    )
    find = {"f": plain.family_name, "d": dob}
    # Police runs registered documents only: one that does not parse or fit its view cannot be
    # registered and is refused before it is read (400); the views that run any document parse and
    # validate it (200, with errors).
    return [
        Call("youth-justice", syntax, fails=True),
        Call(POLICE, syntax, status=400, fails=True),
        Call(POLICE, PAGE, {"first": dob}, fails=True),
        Call("youth-justice", impossible, fails=True),
        Call("youth-justice", FIND_YOUTH % "ref", {"f": child.family_name, "d": "2011-02-30"}, fails=True),
        Call("mash-safeguarding", unknown, fails=True),
        Call(POLICE, unknown, status=400, fails=True),
        Call(POLICE, FIND_POLICE % "ref", find, status=400, fails=True, options={"purpose": False}),
        Call(POLICE, FIND_POLICE % "ref", find, status=401, fails=True, options={"token": "not-a-token"}),
    ]


async def drive_every_agreement(rig: Rig, oracle: Oracle, cases: EdgeCases, seen: PersonalValues) -> None:
    """Every agreement, succeeding and failing, with real personal values in and out."""
    partners = {a: rig.partner(a) for a in rig.app.state.gateway.agreements}
    tokens = {a: await p.token() for a, p in partners.items()}
    people = {
        k: oracle.people[cases.id(k)] for k in ("cohort_plain", "child_17", "refuge_adult", "mash_adult")
    }
    for person in people.values():
        seen.add(person.given_name, person.family_name, str(person.date_of_birth))
    seen.add("2011-02-30")
    calls = _succeeding(people, partners[POLICE].ref(people["cohort_plain"].id)) + _failing(people)
    for call in calls:
        options = {"token": tokens[call.agreement], **call.options}
        response = await partners[call.agreement].post(call.query, call.variables, **options)
        body = response.json()
        seen.add_from(body)
        assert response.status_code == call.status, (call, response.text)
        assert bool(body.get("errors")) is call.fails, (call, response.text)
        for value in (call.variables or {}).values():
            seen.add(value)
    # A failed parse leaves a span generator behind (see test_telemetry): finish it now, not at random.
    gc.collect()
