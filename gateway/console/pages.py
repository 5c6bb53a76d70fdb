"""The console's pages: each request by a signed-in reader is checked, recorded, then answered.

For every page and action, in order: a live session (else the sign-in page), the CSRF token on a
form, the reader's case reference (else the purpose page), the security-audit agreement's decision
(in force, purpose given), then the read itself, then its audit event, written before the page is
sent: no audit, no page. The event is one like a security-audit view read: client `console`, the
reader as acting user, the identity provider as the officer's issuer, the case reference, the
fields of the view the page shows, and the people it names (break-glass windows, a person's
history, the people an event disclosed) as disclosures of them.

Nothing personal reaches a URL: filters and person look-ups are posted, events and break-glass
windows are named by their opaque ids. Nothing of a person's record is shown at all: the console
reads the ledger, which holds internal ids and field names, never values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit import (
    AuditUnavailableError,
    EventDraft,
    LedgerWriter,
    micros_since,
    verify_ledger,
    verify_witness,
)
from gateway.config import Settings
from gateway.console import charts
from gateway.console.reads import (
    AcknowledgeError,
    UnknownAlertError,
    acknowledge,
    alert_queue,
    check_acknowledgeable,
    figures,
)
from gateway.console.sessions import ConsoleSession, Sessions
from gateway.console.signin import DEMO_IDENTITIES, DEMO_ISSUER, OidcSignIn, SignInFailedError
from gateway.db import is_sqlite
from gateway.guard import SecurityLedger
from gateway.guard.breakglass import OUTCOMES, BreakGlassError, review_break_glass
from gateway.guard.tables import break_glass as break_glass_table
from gateway.http import IPNetwork, client_address
from gateway.keys import SigningKeys
from gateway.reviews import evidence
from gateway.reviews import render_html as render_evidence
from gateway.rights import list_requests
from gateway.telemetry import trace_id_hex
from policies import Agreement, PurposeContext, evaluate, out_of_force
from schema.ledger_records import EventFilter, InvalidCursorError

log = logging.getLogger("gateway.console")

LEDGER_AGREEMENT: Final = "security-audit"
COUNCIL: Final = "Westminster City Council"
CLIENT_ID: Final = "console"
PAGE_SIZE: Final = 50
_HEX32: Final = re.compile(r"^[0-9a-f]{32}$")
_PERSON_ID: Final = re.compile(r"^[0-9]{1,10}$")
_MAX_PERSON_ID: Final = 2**31 - 1
_TEXT_LIMIT: Final = 200
_NOTE_LIMIT: Final = 2_000
OUTCOME_CHOICES: Final = ("allowed", "denied", "error", "disconnected", "alert")
_SESSION_KEY: Final = "sid"
_SIGN_IN_CSRF: Final = "sign_in_csrf"
SESSION_COOKIE: Final = "__Host-console"
HSTS: Final = (b"strict-transport-security", b"max-age=31536000")
_FORM_LIMIT: Final = 64 * 1024
_NOT_A_READER: Final = "The security-audit agreement does not let you read the ledger."
_CSRF_MESSAGE: Final = "The form was not the console's own: reload the page and try again."

# Every console response: no scripts at all, styles and images from the gateway only, no framing,
# forms post only back to the console, nothing cached, no referrer sent on to a trace viewer.
SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class _SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self._app = app
        self._headers = list(SECURITY_HEADERS) + ([HSTS] if hsts else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self._headers}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message["headers"] = kept + self._headers
            await send(message)

        await self._app(scope, receive, with_headers)


class Refusal(Exception):
    """A request the console answers with an error page: a stable code and a message that quotes
    nothing the caller sent."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Read:
    """What a page handler read: the template and its values, the view fields it shows, the people
    it names (internal id, fields), all recorded before the page is sent."""

    template: str
    values: dict[str, Any]
    fields: tuple[str, ...] = ("auditEvents",)
    disclosures: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)


_Handler = Callable[[Request, ConsoleSession], Awaitable["Read | Response"]]
T = TypeVar("T")


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class Console:
    """The console as an ASGI app, mounted by the composition root at /console."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        ledger: LedgerWriter | None,
        agreements: Mapping[str, Agreement],
        signing: SigningKeys,
        secret: bytes,
        today: Callable[[], date],
        demo_sign_in: bool = False,
        trusted_proxies: tuple[IPNetwork, ...] = (),
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._ledger = ledger
        self._agreements = agreements
        self._agreement = agreements.get(LEDGER_AGREEMENT)
        self._signing = signing
        self._today = today
        self._demo = demo_sign_in
        self._trusted = trusted_proxies
        self._queries = SecurityLedger(engine, agreements)
        self._sessions = Sessions(
            engine,
            lifetime_minutes=settings.console_session_minutes,
            idle_minutes=settings.console_idle_minutes,
        )
        self._oidc = OidcSignIn(settings) if settings.console_oidc_issuer else None
        self._hsts = settings.issuer.startswith("https://")
        self._sqlite = is_sqlite(settings.database_url)
        self._one_action = asyncio.Lock()  # SQLite: one console action at a time (see _act)
        self._session_secret = secret
        self._templates = Environment(
            loader=PackageLoader("gateway.console", "templates"), autoescape=True, undefined=StrictUndefined
        )
        self._templates.filters["when"] = _when

    # -- assembly -------------------------------------------------------------------------------

    def app(self) -> Starlette:
        page = self._page
        routes = [
            Route("/", page("overview", self.overview), methods=["GET"]),
            Route("/events", page("timeline", self.timeline), methods=["GET", "POST"]),
            Route("/events/{event_id}", page("event", self.event), methods=["GET"]),
            Route("/people", page("person", self.person), methods=["GET", "POST"]),
            Route("/alerts", page("alerts", self.alerts), methods=["GET"]),
            Route(
                "/alerts/{event_id}/acknowledge",
                page("acknowledge alert", self.acknowledge),
                methods=["POST"],
            ),
            Route("/break-glass", page("break-glass", self.break_glass), methods=["GET"]),
            Route(
                "/break-glass/{entry_id}/review", page("review break-glass", self.review), methods=["POST"]
            ),
            Route("/chains", page("chains", self.chains), methods=["GET", "POST"]),
            Route("/agreements", page("agreements", self.register), methods=["GET"]),
            Route("/agreements/{agreement_id}/evidence", page("evidence", self.evidence), methods=["GET"]),
            Route("/me", page("my reads", self.my_reads), methods=["GET", "POST"]),
            Route("/purpose", self.purpose, methods=["GET", "POST"]),
            Route("/sign-in", self.sign_in, methods=["GET"]),
            Route("/sign-in/oidc", self.sign_in_oidc, methods=["GET"]),
            Route("/sign-in/callback", self.sign_in_callback, methods=["GET"]),
            Route("/sign-in/demo", self.sign_in_demo, methods=["POST"]),
            Route("/sign-out", self.sign_out, methods=["POST"]),
            Mount("/static", StaticFiles(directory=Path(__file__).parent / "static")),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(_SecurityHeaders, hsts=self._hsts),
                # Holds only the session token and, during a sign-in, authlib's state, nonce and PKCE
                # verifier: signed, HttpOnly, Secure, SameSite=Lax (the identity provider's redirect
                # back is a cross-site navigation, which a Strict cookie would not survive). __Host-:
                # no Domain, Path=/, so a sibling subdomain cannot plant one (browsers accept Secure
                # cookies from http://127.0.0.1 too, so the demo needs no exception).
                Middleware(
                    SessionMiddleware,
                    secret_key=self._session_secret.hex(),
                    session_cookie=SESSION_COOKIE,
                    path="/",
                    same_site="lax",
                    https_only=True,
                    max_age=self._settings.console_session_minutes * 60,
                ),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed, Exception: self._unexpected},
        )

    # -- the checks every page and action goes through ------------------------------------------

    def _page(self, operation: str, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page (the handler returns what it read, recorded here) or an action (the handler records
        its own event inside its transaction, and answers with a redirect)."""

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            if request.method == "GET" and request.headers.get("sec-fetch-site") == "cross-site":
                # A link from another site would record a read in the reader's name that they did not
                # choose: they are asked first, and nothing is read or recorded until they do.
                return self._render("follow.html", request, None, {"target": request.url.path})
            try:
                reader = await self._admitted(request)
                if isinstance(reader, Response):
                    return reader
                read = await handler(request, reader)
                if isinstance(read, Response):
                    return read
                event_id = await self._record(
                    request, reader, operation, started, fields=read.fields, disclosures=read.disclosures
                )
            except Refusal as refusal:
                return await self._refused(request, refusal, operation, started)
            response = self._render(read.template, request, reader, read.values, event_id=event_id)
            log.info("console page", extra={"page": operation, "status": 200, "event_id": event_id})
            return response

        return handle

    async def _admitted(self, request: Request, *, needs_purpose: bool = True) -> ConsoleSession | Response:
        """The signed-in reader, with the CSRF token of a form checked, a case reference given and the
        agreement allowing; or where to send the browser instead."""
        reader = await self._sessions.find(request.session.get(_SESSION_KEY))
        if reader is None:
            if request.method == "GET":
                return RedirectResponse("/console/sign-in", status_code=303)
            raise Refusal(403, "CONSOLE_SIGN_IN_REQUIRED", "Sign in to the console first.")
        request.state.reader = reader
        rules = self._agreement.console if self._agreement else None
        if rules is None or not rules.admits(reader.claims) or rules.reader(reader.claims) != reader.reader:
            # The agreement no longer admits them (it changed since they signed in): out now.
            await self._sessions.end(reader)
            request.session.pop(_SESSION_KEY, None)
            raise Refusal(403, "CONSOLE_NOT_A_READER", _NOT_A_READER)
        if request.method == "POST":
            form = await self._form(request)
            if not reader.csrf_matches(_field(form, "csrf")):
                raise Refusal(
                    403,
                    "CONSOLE_CSRF_FAILED",
                    _CSRF_MESSAGE,
                )
        if not needs_purpose:
            return reader
        if not reader.case_reference:
            return RedirectResponse("/console/purpose", status_code=303)
        decision = self._decide(reader)
        if not decision.allowed:
            raise Refusal(403, str(decision.code), decision.reason.capitalize() + ".")
        request.state.rule = decision.rule
        return reader

    def _decide(self, reader: ConsoleSession) -> Any:
        return evaluate(
            self._agreement,
            PurposeContext(
                acting_user=reader.reader, case_reference=reader.case_reference, acting_user_verified=True
            ),
            today=self._today(),
        )

    async def _form(self, request: Request) -> dict[str, str]:
        """The posted form (application/x-www-form-urlencoded, the only kind the console's pages send),
        read once per request. A field given twice is refused rather than guessed at."""
        cached = getattr(request.state, "form", None)
        if cached is None:
            if (
                request.headers.get("content-type", "").split(";")[0].strip()
                != "application/x-www-form-urlencoded"
            ):
                raise Refusal(
                    415, "CONSOLE_BAD_INPUT", "Forms are posted as application/x-www-form-urlencoded."
                )
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > _FORM_LIMIT:
                    raise Refusal(413, "CONSOLE_BAD_INPUT", "The form is too large.")
            try:
                pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except (UnicodeDecodeError, ValueError):
                raise Refusal(400, "CONSOLE_BAD_INPUT", "The form could not be read.") from None
            names = [name for name, _ in pairs]
            if len(names) != len(set(names)) or len(names) > 50:
                raise Refusal(400, "CONSOLE_BAD_INPUT", "The form could not be read.")
            cached = dict(pairs)
            request.state.form = cached
        return cached

    async def _record(
        self,
        request: Request,
        reader: ConsoleSession | None,
        operation: str,
        started: float,
        *,
        fields: tuple[str, ...] = (),
        disclosures: list[tuple[int, tuple[str, ...]]] | tuple[()] = (),
        outcome: str = "allowed",
        status: int = 200,
        code: str | None = None,
        acting_user: str | None = None,
        issuer: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Write the event of this request; its id. Raises Refusal(503) if the ledger cannot take it."""
        agreement = self._agreement
        merged: dict[int, tuple[str, ...]] = {}
        for person_id, sent in disclosures:
            merged[person_id] = tuple(dict.fromkeys(merged.get(person_id, ()) + sent))
        draft = EventDraft(
            id=event_id or uuid.uuid4().hex,
            endpoint="console",
            outcome=outcome,
            http_status=status,
            latency_us=micros_since(started),
            client_id=CLIENT_ID,
            agreement_id=agreement.id if agreement else None,
            agreement_version=agreement.version if agreement else None,
            purpose=agreement.purpose if agreement else None,
            lawful_basis=agreement.lawful_basis if agreement else (),
            decision_rule=getattr(request.state, "rule", None),
            acting_user=(reader.reader if reader else acting_user),
            officer_issuer=(reader.issuer if reader else issuer),
            case_reference=reader.case_reference if reader else None,
            operation_name=f"console {operation}"[:100],
            fields_disclosed=fields if outcome == "allowed" else (),
            error_code=code,
            client_address=client_address(request, self._trusted),
            trace_id=trace_id_hex(),
            disclosures=tuple(sorted(merged.items())) if outcome == "allowed" else (),
        )
        if self._ledger is None:
            raise Refusal(
                503,
                "AUDIT_UNAVAILABLE",
                "The audit ledger is switched off: the console reads nothing without it.",
            )
        try:
            await self._ledger.record(draft)
        except AuditUnavailableError:
            raise Refusal(
                503, "AUDIT_UNAVAILABLE", "The audit ledger cannot be written: nothing is shown until it can."
            ) from None
        return draft.id

    async def _refused(self, request: Request, refusal: Refusal, operation: str, started: float) -> Response:
        reader = getattr(request.state, "reader", None)
        event_id = None
        if reader is not None and refusal.code != "AUDIT_UNAVAILABLE":
            try:  # a signed-in reader's refusals are in the ledger too
                event_id = await self._record(
                    request,
                    reader,
                    operation,
                    started,
                    outcome="denied",
                    status=refusal.status,
                    code=refusal.code,
                )
            except Refusal as unavailable:
                refusal = unavailable
        log.warning(
            "console refused",
            extra={"page": operation, "status": refusal.status, "code": refusal.code, "event_id": event_id},
        )
        return self._error_page(request, refusal, reader)

    # -- rendering ------------------------------------------------------------------------------

    def _render(
        self,
        template: str,
        request: Request,
        reader: ConsoleSession | None,
        values: dict[str, Any],
        *,
        event_id: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        page = self._templates.get_template(template).render(
            reader=reader,
            csrf=reader.csrf_token if reader else "",
            event_id=event_id,
            path=request.url.path,
            demo=self._demo,
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def _error_page(self, request: Request, refusal: Refusal, reader: ConsoleSession | None) -> HTMLResponse:
        return self._render(
            "error.html",
            request,
            reader,
            {"code": refusal.code, "message": refusal.message},
            status=refusal.status,
        )

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._error_page(request, Refusal(404, "CONSOLE_NOT_FOUND", "No such page."), None)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return self._error_page(request, Refusal(405, "METHOD_NOT_ALLOWED", "Method not allowed."), None)

    # -- pages ----------------------------------------------------------------------------------

    async def overview(self, request: Request, reader: ConsoleSession) -> Read:
        # The ledger's own clock: its times are real UTC, whatever day the agreements are judged on.
        made = await figures(self._engine, self._agreements, today=datetime.now(UTC).date())
        pending = await self._queries.break_glass(pending=True, first=200, after=None)
        alerts = await alert_queue(self._engine)
        open_alerts = sum(1 for item in alerts if item.acknowledged_at is None)
        commit = made.commit_ms
        return Read(
            "overview.html",
            {
                "disclosures_chart": charts.daily_small_multiples(
                    made.days, made.disclosures_per_day, what="people disclosed"
                ),
                "refusals_chart": charts.horizontal_bars(
                    made.refusals, what="refused requests", empty="No refusals in these days."
                ),
                "quota_chart": charts.quota_bars(made.people_today, empty="Nobody disclosed today."),
                "latency_chart": charts.latency_histogram(commit, empty="No events committed yet."),
                "latency": {
                    name: charts.percentile(commit, q)
                    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
                },
                "days": made.days,
                "pending_break_glass": len(pending.items),
                "open_alerts": open_alerts,
                "disclosed_total": sum(sum(v) for v in made.disclosures_per_day.values()),
                "refused_total": sum(count for _, count in made.refusals),
            },
        )

    async def timeline(self, request: Request, reader: ConsoleSession) -> Read:
        form = await self._form(request) if request.method == "POST" else {}
        criteria, given = self._criteria(form)
        after = _field(form, "after") or None
        try:
            page = await self._queries.search_events(criteria, first=PAGE_SIZE, after=after)
        except InvalidCursorError:
            raise Refusal(
                400, "CONSOLE_BAD_INPUT", "That page of the timeline is not one the console gave."
            ) from None
        return Read(
            "events.html",
            {
                "title": "Timeline",
                "events": [record for _, record in page.items],
                "next_cursor": page.items[-1][0] if page.has_next and page.items else None,
                "filter": given,
                "agreements": self._agreements,
                "outcomes": OUTCOME_CHOICES,
                "action": "/console/events",
                "filters_shown": True,
            },
        )

    def _criteria(self, form: Mapping[str, str]) -> tuple[EventFilter, dict[str, str]]:
        given = {
            name: _field(form, name)
            for name in ("client", "agreement", "outcome", "error_code", "officer", "case", "start", "end")
        }
        given = {
            name: _plain(value, f"The filter '{name}'", limit=_TEXT_LIMIT) for name, value in given.items()
        }
        if given["agreement"] and given["agreement"] not in self._agreements:
            raise Refusal(400, "CONSOLE_BAD_INPUT", "Choose an agreement from the list.")
        if given["outcome"] and given["outcome"] not in OUTCOME_CHOICES:
            raise Refusal(400, "CONSOLE_BAD_INPUT", "Choose an outcome from the list.")
        criteria = EventFilter(
            client=given["client"] or None,
            agreement=given["agreement"] or None,
            outcome=given["outcome"] or None,
            error_code=given["error_code"] or None,
            acting_user=given["officer"] or None,
            case_reference=given["case"] or None,
            start=_moment(given["start"], "from"),
            end=_moment(given["end"], "to"),
        )
        return criteria, given

    async def event(self, request: Request, reader: ConsoleSession) -> Read:
        event_id = request.path_params["event_id"]
        record = await self._queries.event(event_id) if _HEX32.match(event_id) else None
        if record is None:
            raise Refusal(404, "CONSOLE_NOT_FOUND", "No event has this id.")
        people = await self._queries.people_of(record.id)
        template = self._settings.console_trace_url
        trace_link = template.replace("{trace_id}", record.trace_id) if template and record.trace_id else None
        return Read(
            "event.html",
            {"event": record, "people": people, "trace_link": trace_link},
            fields=("auditEvents", "disclosures") if people else ("auditEvents",),
            # The event names the people it disclosed: reading it is a read of their disclosure history.
            disclosures=[(person_id, ("disclosures",)) for person_id, _ in people],
        )

    async def person(self, request: Request, reader: ConsoleSession) -> Read:
        if request.method == "GET":
            return Read(
                "person.html",
                {"person_id": None, "requests": [], "disclosures": [], "next_cursor": None},
                fields=(),
            )
        form = await self._form(request)
        given = _field(form, "person_id")
        if not _PERSON_ID.match(given) or int(given) > _MAX_PERSON_ID:
            raise Refusal(400, "CONSOLE_BAD_INPUT", "A person id is the council's internal id: digits only.")
        person_id = int(given)
        try:
            page = await self._queries.disclosures_of(
                person_id, first=PAGE_SIZE, after=_field(form, "after") or None
            )
        except InvalidCursorError:
            raise Refusal(
                400, "CONSOLE_BAD_INPUT", "That page of the history is not one the console gave."
            ) from None
        async with self._engine.connect() as conn:
            requests = await list_requests(conn, person_id=person_id)
        return Read(
            "person.html",
            {
                "person_id": person_id,
                "requests": requests,
                "disclosures": [record for _, record in page.items],
                "next_cursor": page.items[-1][0] if page.has_next and page.items else None,
            },
            fields=("disclosures",),
            disclosures=[(person_id, ("disclosures",))],
        )

    async def alerts(self, request: Request, reader: ConsoleSession) -> Read:
        items = await alert_queue(self._engine)
        return Read(
            "alerts.html",
            {
                "open": [item for item in items if item.acknowledged_at is None],
                "done": [item for item in items if item.acknowledged_at is not None],
            },
        )

    async def acknowledge(self, request: Request, reader: ConsoleSession) -> Response:
        started = time.perf_counter()
        event_id = request.path_params["event_id"]
        note = _plain(_field(await self._form(request), "note"), "A note", limit=_NOTE_LIMIT, lines=True)
        if not _HEX32.match(event_id):
            raise Refusal(404, "CONSOLE_NOT_FOUND", "No alert has this id.")

        async def check(conn: AsyncConnection) -> None:
            await _acknowledgeable(conn, event_id)

        async def apply(conn: AsyncConnection, ledger_event: str) -> None:
            try:
                await acknowledge(
                    conn, event_id, reader=reader.reader, note=note, ledger_event_id=ledger_event
                )
            except AcknowledgeError as refused:  # another reader got there first
                raise Refusal(409, "CONSOLE_CONFLICT", str(refused).capitalize() + ".") from None

        async def record(_: None, ledger_event: str) -> None:
            await self._record(
                request, reader, f"acknowledge alert {event_id}", started, fields=("auditEvents",),
                status=303, event_id=ledger_event,
            )  # fmt: skip

        ledger_event = await self._act(check, apply, record)
        log.info("console action", extra={"page": "acknowledge", "status": 303, "event_id": ledger_event})
        return RedirectResponse("/console/alerts", status_code=303)

    async def break_glass(self, request: Request, reader: ConsoleSession) -> Read:
        pending = await self._queries.break_glass(pending=True, first=200, after=None)
        recent = await self._queries.break_glass(pending=False, first=PAGE_SIZE, after=None)
        reviewed = [entry for _, entry in recent.items if entry.reviewed_at is not None]
        entries = [entry for _, entry in pending.items] + reviewed
        return Read(
            "break_glass.html",
            {"pending": [entry for _, entry in pending.items], "reviewed": reviewed, "outcomes": OUTCOMES},
            fields=("breakGlass",),
            disclosures=[(entry.person_id, ("breakGlass",)) for entry in entries],
        )

    async def review(self, request: Request, reader: ConsoleSession) -> Response:
        started = time.perf_counter()
        entry_id = request.path_params["entry_id"]
        form = await self._form(request)
        outcome = _field(form, "outcome")
        note = _plain(_field(form, "note"), "A note", limit=_NOTE_LIMIT, lines=True)
        if not _HEX32.match(entry_id):
            raise Refusal(404, "CONSOLE_NOT_FOUND", "No break-glass has this id.")
        if outcome not in OUTCOMES or not note:
            raise Refusal(
                400,
                "CONSOLE_BAD_INPUT",
                f"A review is justified or escalated, with a note of 1 to {_NOTE_LIMIT} characters.",
            )

        async def check(conn: AsyncConnection) -> int:
            found = (
                await conn.execute(select(break_glass_table).where(break_glass_table.c.id == entry_id))
            ).first()
            if found is None:
                raise Refusal(404, "CONSOLE_NOT_FOUND", "No break-glass has this id.")
            if found.reviewed_at is not None:
                raise Refusal(409, "CONSOLE_CONFLICT", "This break-glass was reviewed already.")
            return int(found.person_id)

        async def apply(conn: AsyncConnection, ledger_event: str) -> None:
            try:
                await review_break_glass(conn, entry_id, outcome=outcome, reviewer=reader.reader, note=note)
            except BreakGlassError as refused:  # another reviewer got there first
                raise Refusal(409, "CONSOLE_CONFLICT", str(refused).capitalize() + ".") from None

        async def record(person_id: int, ledger_event: str) -> None:
            await self._record(
                request, reader, f"review break-glass {entry_id}", started, fields=("breakGlass",),
                disclosures=[(person_id, ("breakGlass",))], status=303, event_id=ledger_event,
            )  # fmt: skip

        ledger_event = await self._act(check, apply, record)
        log.info("console action", extra={"page": "review", "status": 303, "event_id": ledger_event})
        return RedirectResponse("/console/break-glass", status_code=303)

    async def _act(
        self,
        check: Callable[[AsyncConnection], Awaitable[T]],
        apply: Callable[[AsyncConnection, str], Awaitable[None]],
        record: Callable[[T, str], Awaitable[None]],
    ) -> str:
        """Make a change and record it, so that the ledger says only what was done and two readers at
        once make one change and one refusal; the id of its event.

        PostgreSQL: the change first (conditional: a second reader's waits on the first's row or key,
        then finds it done), then the event, then the commit; an event the ledger cannot take rolls
        the change back. SQLite (one process, one writer at a time): one action at a time, the event
        before the change, because the ledger's writer could not write while this transaction held
        the database's lock."""
        ledger_event = uuid.uuid4().hex
        if self._sqlite:
            async with self._one_action:
                async with self._engine.connect() as conn:
                    found = await check(conn)
                await record(found, ledger_event)
                async with self._engine.begin() as conn:
                    await apply(conn, ledger_event)
            return ledger_event
        async with self._engine.begin() as conn:
            found = await check(conn)
            await apply(conn, ledger_event)
            await record(found, ledger_event)
        return ledger_event

    async def chains(self, request: Request, reader: ConsoleSession) -> Read:
        if request.method == "GET":
            return Read(
                "chains.html",
                {"reports": None, "witness": None, "witness_configured": self._witness_dir() is not None},
                fields=(),
            )
        keys = self._signing.audit_verification
        reports = await verify_ledger(self._engine, keys)
        directory = self._witness_dir()
        checked = None
        if directory is not None and directory.exists():
            checked = await verify_witness(self._engine, keys, [directory])
        return Read(
            "chains.html",
            {"reports": reports, "witness": checked, "witness_configured": directory is not None},
        )

    def _witness_dir(self) -> Path | None:
        target = self._settings.witness
        return target.directory if target is not None else None

    async def register(self, request: Request, reader: ConsoleSession) -> Read:
        today = self._today()
        rows = []
        for agreement in sorted(self._agreements.values(), key=lambda a: a.review_due):
            days = (agreement.review_due - today).days
            state = "overdue" if days < 0 else "due soon" if days <= 60 else "in date"
            rows.append({"agreement": agreement, "days": days, "state": state})
        return Read("agreements.html", {"rows": rows, "today": today}, fields=())

    async def evidence(self, request: Request, reader: ConsoleSession) -> Response:
        """The evidence pack for an agreement's review, over the last twelve months, as a document to
        keep with the review (a download: it is a standalone page, not a console page)."""
        started = time.perf_counter()
        agreement = self._agreements.get(request.path_params["agreement_id"])
        if agreement is None:
            raise Refusal(404, "CONSOLE_NOT_FOUND", "No agreement has this id.")
        end = datetime.now(UTC).date()
        pack = await evidence(self._engine, agreement, start=end - timedelta(days=365), end=end)
        await self._record(request, reader, f"evidence {agreement.id}", started, fields=("auditEvents",))
        name = f"evidence-{agreement.id}-{pack['period']['from']}-to-{pack['period']['to']}.html"
        return HTMLResponse(
            render_evidence(pack, council=COUNCIL),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def my_reads(self, request: Request, reader: ConsoleSession) -> Read:
        form = await self._form(request) if request.method == "POST" else {}
        try:
            page = await self._queries.search_events(
                EventFilter(client=CLIENT_ID, acting_user=reader.reader),
                first=PAGE_SIZE,
                after=_field(form, "after") or None,
            )
        except InvalidCursorError:
            raise Refusal(400, "CONSOLE_BAD_INPUT", "That page is not one the console gave.") from None
        return Read(
            "events.html",
            {
                "title": "Your reads",
                "events": [record for _, record in page.items],
                "next_cursor": page.items[-1][0] if page.has_next and page.items else None,
                "filter": {},
                "agreements": self._agreements,
                "outcomes": OUTCOME_CHOICES,
                "action": "/console/me",
                "filters_shown": False,
            },
        )

    # -- purpose, sign-in and sign-out ----------------------------------------------------------

    async def purpose(self, request: Request) -> Response:
        """Why the reader is looking: asked before any page, changeable, and each change recorded."""
        started = time.perf_counter()
        try:
            reader = await self._admitted(request, needs_purpose=False)
            if isinstance(reader, Response):
                return reader
            if request.method == "GET":
                return self._render("purpose.html", request, reader, {"problem": None})
            try:
                case = _plain(
                    _field(await self._form(request), "case_reference"), "A case reference", limit=_TEXT_LIMIT
                )
            except Refusal:
                case = ""
            if not case:
                problem = f"Give a case or investigation reference of 1 to {_TEXT_LIMIT} plain characters."
                return self._render("purpose.html", request, reader, {"problem": problem}, status=400)
            # Recorded under the new reference before it is kept: every later read is filed under it.
            changed = dataclasses.replace(reader, case_reference=case)
            await self._record(request, changed, "purpose", started, status=303)
            await self._sessions.set_case_reference(reader, case)
        except Refusal as refusal:
            return await self._refused(request, refusal, "purpose", started)
        return RedirectResponse("/console/", status_code=303)

    async def sign_in(self, request: Request) -> Response:
        if await self._sessions.find(request.session.get(_SESSION_KEY)) is not None:
            return RedirectResponse("/console/", status_code=303)
        if self._oidc is None and not self._demo:
            return self._error_page(
                request,
                Refusal(
                    503,
                    "CONSOLE_NOT_CONFIGURED",
                    "Sign-in is not configured: the operator sets GATEWAY_CONSOLE_OIDC_ISSUER, "
                    "GATEWAY_CONSOLE_OIDC_CLIENT_ID and GATEWAY_CONSOLE_OIDC_CLIENT_SECRET.",
                ),
                None,
            )
        token = request.session.get(_SIGN_IN_CSRF) or secrets.token_urlsafe(32)
        request.session[_SIGN_IN_CSRF] = token
        return self._render(
            "sign_in.html",
            request,
            None,
            {
                "oidc": self._oidc is not None,
                "identities": DEMO_IDENTITIES if self._demo else {},
                "sign_in_csrf": token,
            },
        )

    async def sign_in_oidc(self, request: Request) -> Response:
        if self._oidc is None:
            return self._error_page(request, Refusal(404, "CONSOLE_NOT_FOUND", "No such page."), None)
        # Signing in again ends the session this browser had: it never lingers behind a new sign-in.
        await self._sessions.end_token(request.session.pop(_SESSION_KEY, None))
        try:
            return await self._oidc.redirect(request)
        except SignInFailedError as failed:
            log.warning("console sign-in failed", extra={"reason": str(failed)})
            return self._error_page(
                request, Refusal(502, "CONSOLE_SIGN_IN_FAILED", str(failed).capitalize() + "."), None
            )

    async def sign_in_callback(self, request: Request) -> Response:
        started = time.perf_counter()
        if self._oidc is None:
            return self._error_page(request, Refusal(404, "CONSOLE_NOT_FOUND", "No such page."), None)
        try:
            claims = await self._oidc.claims(request)
        except SignInFailedError as failed:
            log.warning("console sign-in failed", extra={"reason": str(failed)})
            return self._error_page(
                request, Refusal(401, "CONSOLE_SIGN_IN_FAILED", str(failed).capitalize() + "."), None
            )
        return await self._signed_in(request, claims, self._oidc.issuer, started)

    async def sign_in_demo(self, request: Request) -> Response:
        started = time.perf_counter()
        if not self._demo:
            return self._error_page(request, Refusal(404, "CONSOLE_NOT_FOUND", "No such page."), None)
        try:
            form = await self._form(request)
        except Refusal as refusal:
            return self._error_page(request, refusal, None)
        expected = request.session.get(_SIGN_IN_CSRF)
        offered = _field(form, "csrf")
        if not expected or not secrets.compare_digest(expected.encode(), offered.encode()):
            return self._error_page(
                request,
                Refusal(
                    403,
                    "CONSOLE_CSRF_FAILED",
                    _CSRF_MESSAGE,
                ),
                None,
            )
        identity = DEMO_IDENTITIES.get(_field(form, "identity"))
        if identity is None:
            return self._error_page(
                request, Refusal(400, "CONSOLE_BAD_INPUT", "Choose one of the demo's identities."), None
            )
        return await self._signed_in(request, dict(identity.claims), DEMO_ISSUER, started)

    async def _signed_in(
        self, request: Request, claims: dict[str, Any], issuer: str, started: float
    ) -> Response:
        # Whoever this browser was signed in as before, that session ends here, admitted or not.
        await self._sessions.end_token(request.session.pop(_SESSION_KEY, None))
        rules = self._agreement.console if self._agreement else None
        name = rules.reader(claims) if rules else None
        refusal = None
        if rules is None or not rules.admits(claims):
            refusal = Refusal(403, "CONSOLE_NOT_A_READER", _NOT_A_READER)
        elif self._agreement is not None and (closed := out_of_force(self._agreement, today=self._today())):
            refusal = Refusal(403, str(closed.code), closed.reason.capitalize() + ".")
        if refusal is not None:
            if name is not None:  # someone the identity provider vouched for tried: the team should know
                try:
                    await self._record(
                        request, None, "sign-in", started, outcome="denied", status=403, code=refusal.code,
                        acting_user=name, issuer=issuer,
                    )  # fmt: skip
                except Refusal as unavailable:
                    refusal = unavailable
            log.warning("console sign-in refused", extra={"code": refusal.code})
            return self._error_page(request, refusal, None)
        assert rules is not None and name is not None
        try:  # recorded before the session exists: a sign-in the ledger cannot hold is not made
            await self._record(request, None, "sign-in", started, acting_user=name, issuer=issuer, status=303)
        except Refusal as unavailable:
            return self._error_page(request, unavailable, None)
        request.session.clear()  # nothing from before the sign-in carries over (session fixation)
        request.session[_SESSION_KEY] = await self._sessions.start(
            reader=name, issuer=issuer, claims=rules.kept(claims)
        )
        log.info("console sign-in", extra={"status": 303})
        return RedirectResponse("/console/purpose", status_code=303)

    async def sign_out(self, request: Request) -> Response:
        started = time.perf_counter()
        reader = await self._sessions.find(request.session.get(_SESSION_KEY))
        if reader is not None:
            request.state.reader = reader
            try:
                if not reader.csrf_matches(_field(await self._form(request), "csrf")):
                    raise Refusal(403, "CONSOLE_CSRF_FAILED", _CSRF_MESSAGE)
            except Refusal as refusal:
                return await self._refused(request, refusal, "sign-out", started)
            await self._sessions.end(reader)
            try:
                await self._record(request, reader, "sign-out", started, status=303)
            except Refusal:
                log.warning("console sign-out not recorded", extra={"code": "AUDIT_UNAVAILABLE"})
        request.session.clear()
        return RedirectResponse("/console/sign-in", status_code=303)

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        """A failure nothing foresaw: a plain refusal page, with the console's headers all the same."""
        log.error("console failed", exc_info=exc)
        page = self._error_page(
            request, Refusal(500, "INTERNAL_SERVER_ERROR", "Something went wrong; nothing was changed."), None
        )
        for name, value in self._security_headers():
            page.headers[name.decode()] = value.decode()
        return page

    def _security_headers(self) -> list[tuple[bytes, bytes]]:
        return list(SECURITY_HEADERS) + ([HSTS] if self._hsts else [])


async def _acknowledgeable(conn: AsyncConnection, event_id: str) -> None:
    try:
        await check_acknowledgeable(conn, event_id)
    except UnknownAlertError:
        raise Refusal(404, "CONSOLE_NOT_FOUND", "No alert has this id.") from None
    except AcknowledgeError as refused:
        raise Refusal(409, "CONSOLE_CONFLICT", str(refused).capitalize() + ".") from None


def _plain(text: str, what: str, *, limit: int, lines: bool = False) -> str:
    """`text` stripped, if it is plain text of at most `limit` characters: no control or format
    characters (a right-to-left override can make one reference look like another; a NUL is refused
    by PostgreSQL), but for line breaks and tabs where `lines`."""
    text = text.strip()
    allowed = "\n\r\t" if lines else ""
    if len(text) > limit or any(
        unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") and c not in allowed for c in text
    ):
        raise Refusal(400, "CONSOLE_BAD_INPUT", f"{what} must be plain text of at most {limit} characters.")
    return text


def _field(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _moment(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refusal(400, "CONSOLE_BAD_INPUT", f"'{name}' must be a date and time (UTC).") from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # an offset that takes it past the calendar's ends
        raise Refusal(400, "CONSOLE_BAD_INPUT", f"'{name}' must be a date and time (UTC).") from None
