"""The security console in a real browser (headless Chromium driven by Selenium), against a gateway
served by uvicorn on 127.0.0.1, on SQLite and on PostgreSQL.

Set-up: the gateway with the demo sign-in and a trace viewer link pointing at a stand-in viewer (a tiny
Starlette app, also served here); real partner traffic to give the console something to show: a police
listing with real tokens (private_key_jwt, DPoP, a verified officer), and a MASH break-glass search that
opens a window for review and raises a BREAK_GLASS alert.

Then an analyst works through the console as a person would, each step asserted on what the page shows
and saved as a screenshot (GATEWAY_TEST_ARTIFACTS/<database>/, else var/test-artifacts/console/<database>/):
sign in and give a case reference, the overview's charts, the timeline filtered to the police, one event's
facts, its trace in the viewer, a person's history, a break-glass review, an alert acknowledged, and the
reader's own reads. A housing officer is refused. No URL the browser visits names anyone disclosed.
"""

from __future__ import annotations

import base64
import html
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.guard.tables import break_glass
from gateway.keys import SigningKeys
from resolvers.models import addresses, households, people
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.console import ANALYST_EMAIL
from tests.support.partners import Partner, enrol
from tests.support.population import EdgeCases
from tests.support.server import serve_in_thread

if TYPE_CHECKING:
    from tests.support.identity import TestIssuer

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000")
WAIT_SECONDS = 15
CASE_REFERENCE = "INV-2026-0117"
BREAK_GLASS_REASON = "risk to life: referral 4471"
REVIEW_NOTE = "Referral 4471 checked with the MASH duty manager: justified."
ACK_NOTE = "Seen: the break-glass was reviewed as justified."
POLICE = "police-prevention"
MASH = "mash-safeguarding"
POLICE_LIST = (
    "query Cohort { people(first: 3) { edges { node { ref givenName familyName dateOfBirth postcode } } } }"
)
MASH_FIND = (
    "query Referral($g: String!, $f: String!, $d: Date!) { findPeople(givenName: $g, familyName: $f, "
    "dateOfBirth: $d) { ref givenName familyName address { line1 postcode } withheld } }"
)


# -- the browser --------------------------------------------------------------------------------


def _require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        message = (
            "the console's browser tests need Debian's chromium and chromedriver (apt-get install "
            f"chromium chromium-driver); missing: {', '.join(missing)}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module; Selenium Manager never runs (the driver's path is given)."""
    _require_browser()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in BROWSER_ARGS:
        options.add_argument(argument)
    made = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    made.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield made
    finally:
        made.quit()


# -- the stand-in trace viewer and the gateway --------------------------------------------------


async def _trace_page(request: Request) -> HTMLResponse:
    trace_id = html.escape(request.path_params["trace_id"])
    return HTMLResponse(
        f"<!doctype html><title>Trace {trace_id}</title><h1>Stand-in trace viewer</h1>"
        f'<p>Trace <code id="trace-id">{trace_id}</code></p>'
    )


@pytest.fixture(scope="module")
def trace_viewer() -> Iterator[str]:
    with serve_in_thread(Starlette(routes=[Route("/trace/{trace_id}", _trace_page)])) as url:
        yield url


@pytest.fixture(scope="module")
def console_url(
    settings: Settings,
    signing: SigningKeys,
    engine: AsyncEngine,
    issuers: dict[str, TestIssuer],
    trace_viewer: str,
) -> Iterator[str]:
    """The gateway, served: it builds its own engine on the server thread's loop (engine=None). The
    session's issuer (http://127.0.0.1:8000) stays its public URL: tokens and DPoP proofs name it."""
    served = settings.model_copy(update={"console_trace_url": f"{trace_viewer}/trace/{{trace_id}}"})
    app = create_app(
        served, engine=None, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY,
        console_demo_sign_in=True,
    )  # fmt: skip
    with serve_in_thread(app) as url:
        yield url


# -- real traffic for the console to show -------------------------------------------------------


@dataclass
class Traffic:
    police_event: dict[str, Any]  # the ledger row of the police listing
    police_people: list[int]  # the people it disclosed (internal ids)
    mash_client: str
    window_id: str  # the break-glass window the MASH search opened
    refuge_person: int
    alert_id: str  # the BREAK_GLASS alert it raised
    private: set[str] = field(default_factory=set)  # names and postcodes of everyone disclosed


async def _row(engine: AsyncEngine, **where: Any) -> dict[str, Any]:
    stmt = select(audit_events)
    for column, value in where.items():
        stmt = stmt.where(audit_events.c[column] == value)
    async with engine.connect() as conn:
        [row] = (await conn.execute(stmt)).all()
    return dict(row._mapping)


async def _private_values(engine: AsyncEngine, person_ids: list[int]) -> set[str]:
    """Given names, family names and postcodes of these people, as the council holds them."""
    joined = people.join(households, households.c.id == people.c.household_id).join(
        addresses, addresses.c.id == households.c.address_id
    )
    stmt = (
        select(people.c.given_name, people.c.family_name, addresses.c.postcode)
        .select_from(joined)
        .where(people.c.id.in_(person_ids))
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    assert len(rows) == len(set(person_ids))
    return {value for row in rows for value in row if value}


@pytest.fixture(scope="module")
async def traffic(console_url: str, settings: Settings, engine: AsyncEngine, cases: EdgeCases) -> Traffic:
    async with httpx.AsyncClient(base_url=console_url, timeout=30) as http:

        async def partner(agreement_id: str) -> Partner:
            return await enrol(
                engine, http, agreement_id, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
            )

        police = await partner(POLICE)
        listed = await police.post(POLICE_LIST)
        assert listed.status_code == 200, listed.text
        nodes = [edge["node"] for edge in listed.json()["data"]["people"]["edges"]]
        assert len(nodes) == 3
        police_people = [police.person_id(node["ref"]) for node in nodes]
        police_event = await _row(engine, id=listed.headers["x-audit-event-id"])

        refuge = cases.id("refuge_adult")
        async with engine.connect() as conn:
            person = (await conn.execute(select(people).where(people.c.id == refuge))).one()
        mash = await partner(MASH)
        found = await mash.post(
            MASH_FIND,
            {"g": person.given_name, "f": person.family_name, "d": person.date_of_birth.isoformat()},
            headers={
                "X-Case-Reference": f"CASE-{secrets.token_hex(4)}",
                "X-Break-Glass-Reason": BREAK_GLASS_REASON,
            },
        )
        assert found.status_code == 200, found.text
        assert found.json()["data"]["findPeople"]["address"] is not None, "the break-glass opened the address"

    async with engine.connect() as conn:
        [window] = (
            await conn.execute(select(break_glass).where(break_glass.c.client_id == mash.client_id))
        ).all()
    alert = await _row(engine, endpoint="alert", client_id=mash.client_id)
    assert alert["error_code"] == "BREAK_GLASS"
    return Traffic(
        police_event=police_event,
        police_people=police_people,
        mash_client=mash.client_id,
        window_id=window.id,
        refuge_person=refuge,
        alert_id=alert["id"],
        private=await _private_values(engine, [*police_people, refuge]),
    )


# -- driving the pages --------------------------------------------------------------------------


class Console:
    """The browser on the console: waits for each page, keeps every URL visited, saves screenshots."""

    def __init__(self, driver: webdriver.Chrome, base: str, artifacts: Path) -> None:
        self.driver, self.base, self.artifacts = driver, base, artifacts
        self.visited: list[str] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self._arrived()

    def submit(self, button: WebElement) -> None:
        """Click a button that posts a form, and wait for the page it leads to."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        button.click()
        self._left(page)

    def follow(self, link: WebElement) -> None:
        self.submit(link)

    def back(self) -> None:
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.back()
        self._left(page)

    def _left(self, page: WebElement) -> None:
        """Wait until the browser has left the page `page` belonged to, and the next one has loaded."""

        def gone(_: Any) -> bool:
            try:
                page.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as error:  # mid-navigation chromedriver may say it differently
                return "does not belong to the document" in str(error)
            return False

        WebDriverWait(self.driver, WAIT_SECONDS).until(gone)
        self._arrived()

    def _arrived(self) -> None:
        WebDriverWait(self.driver, WAIT_SECONDS).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        self.visited.append(self.driver.current_url)

    def one(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.one(css).text.strip()

    def error_code(self) -> str | None:
        found = self.all("#error-code")
        return found[0].text.strip() if found else None

    def screenshot(self, name: str) -> Path:
        """The whole page (beyond the window's height), as PNG."""
        path = self.artifacts / f"{name}.png"
        try:
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": size["width"],
                        "height": min(size["height"], 6000),
                        "scale": 1,
                    },
                },
            )
            path.write_bytes(base64.b64decode(shot["data"]))
        except WebDriverException:
            assert self.driver.save_screenshot(str(path))
        assert path.stat().st_size > 1_000, f"{path.name} looks empty"
        return path

    def table(self, css: str) -> list[list[str]]:
        """The cells' text of each body row of a table."""
        return [
            [cell.text.strip() for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in self.all(f"{css} tbody tr")
        ]


def _artifacts(settings: Settings, repo_root: Path) -> Path:
    database = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    given = os.environ.get("GATEWAY_TEST_ARTIFACTS")
    directory = (
        Path(given) / database if given else repo_root / "var" / "test-artifacts" / "console" / database
    )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def console(driver: webdriver.Chrome, console_url: str, settings: Settings, repo_root: Path) -> Console:
    """The module's browser, on this database's gateway, with no cookies from before."""
    driver.get(console_url + "/console/sign-in")
    driver.delete_all_cookies()
    return Console(driver, console_url, _artifacts(settings, repo_root))


def _named_in(url: str, value: str) -> bool:
    """Whether a URL carries a person's value as a word of its own (not inside an opaque hex id)."""
    text = unquote_plus(url)
    spellings = {value, value.replace(" ", ""), value.replace(" ", "+"), value.replace(" ", "%20")}
    return any(
        re.search(rf"(?<![A-Za-z0-9]){re.escape(spelling)}(?![A-Za-z0-9])", text, re.IGNORECASE)
        for spelling in spellings
    )


def _agreement_cells(console: Console) -> list[str]:
    return [cells[5] for cells in console.table("#events") if len(cells) == 11]


# -- the tests ----------------------------------------------------------------------------------


async def test_an_analyst_works_through_the_console(console: Console, traffic: Traffic) -> None:
    event = traffic.police_event

    # Sign in as the demo's security analyst, then give a case reference.
    console.open("/console/")
    assert console.driver.current_url.endswith("/console/sign-in"), "signed out: the sign-in page"
    console.one("input[name=identity][value=analyst]").click()
    console.submit(console.one("#demo-sign-in"))
    assert console.driver.current_url.endswith("/console/purpose")
    assert ANALYST_EMAIL in console.text("header .who")
    console.one("#case_reference").send_keys(CASE_REFERENCE)
    console.screenshot("01-sign-in")
    console.submit(console.one("#set-purpose"))

    # The overview: four charts, each an inline SVG.
    assert console.driver.current_url.endswith("/console/")
    assert f"case {CASE_REFERENCE}" in console.text("header .who")
    for chart in ("chart-disclosures", "chart-refusals", "chart-quota", "chart-latency"):
        assert console.all(f"figure#{chart} svg"), f"{chart} has no chart"
    assert int(console.text("#pending-break-glass")) >= 1
    assert int(console.text("#open-alerts")) >= 1
    console.screenshot("02-overview")

    # The timeline, unfiltered, then filtered to the police.
    console.follow(console.one("nav a[href='/console/events']"))
    unfiltered = _agreement_cells(console)
    assert any(not cell.startswith(POLICE) for cell in unfiltered), unfiltered
    console.screenshot("03-timeline")
    Select(console.one("#filter-agreement")).select_by_value(POLICE)
    console.submit(console.one("#apply-filters"))
    filtered = _agreement_cells(console)
    assert filtered and all(cell.startswith(f"{POLICE}@") for cell in filtered), filtered
    assert Select(console.one("#filter-agreement")).first_selected_option.get_attribute("value") == POLICE
    console.screenshot("04-timeline-police")

    # The police listing's event: its facts as the ledger holds them.
    console.follow(console.one(f"a.event-link[href='/console/events/{event['id']}']"))
    assert console.driver.current_url.endswith(f"/console/events/{event['id']}")
    assert event["decision_rule"] and console.text("#event-rule") == event["decision_rule"]
    disclosed = set(console.text("#event-disclosed").split(", "))
    assert disclosed == set(event["fields_disclosed"].split(","))
    assert {"givenName", "familyName", "dateOfBirth", "postcode"} <= disclosed
    assert console.text("#event-people") == "3" == str(event["people_count"])
    assert console.text("#event-outcome").startswith("allowed")
    listed = [int(cells[0]) for cells in console.table("#event-people-list")]
    assert sorted(listed) == sorted(traffic.police_people)
    console.screenshot("05-event")

    # Its trace, in the (stand-in) trace viewer.
    trace_id = event["trace_id"]
    assert trace_id and console.text("#trace-link") == trace_id
    console.follow(console.one("#trace-link"))
    assert console.driver.current_url.endswith(f"/trace/{trace_id}")
    assert console.text("#trace-id") == trace_id
    console.screenshot("06-trace")

    # Back to the event; one person's history names the police as a recipient.
    console.back()
    assert console.driver.current_url.endswith(f"/console/events/{event['id']}")
    first_person = console.table("#event-people-list")[0][0]
    console.submit(console.all("button.person-history")[0])
    assert console.driver.current_url.endswith("/console/people")
    assert console.text("main h2") == f"Disclosures of person {first_person}"
    history = console.table("#disclosures")
    assert any(
        cells[1] == "Metropolitan Police Service" and cells[2].startswith(f"{POLICE}@") for cells in history
    )
    console.screenshot("07-person-history")

    # The break-glass window, reviewed as justified.
    console.follow(console.one("nav a[href='/console/break-glass']"))
    card = f"#break-glass-{traffic.window_id}"
    assert console.text(f"{card} dl").count(str(traffic.refuge_person)) == 1
    console.one(f"{card} input[name=outcome][value=justified]").click()
    console.one(f"{card} textarea[name=note]").send_keys(REVIEW_NOTE)
    console.submit(console.one(f"{card} button.review"))
    assert console.driver.current_url.endswith("/console/break-glass")
    assert not console.all(card), "the reviewed window left the queue"
    reviewed = [cells for cells in console.table("#reviewed") if cells[-1] == REVIEW_NOTE]
    assert len(reviewed) == 1
    assert reviewed[0][3] == str(traffic.refuge_person)
    assert (reviewed[0][4], reviewed[0][5]) == ("justified", ANALYST_EMAIL)
    console.screenshot("08-break-glass-reviewed")

    # The BREAK_GLASS alert, acknowledged.
    console.follow(console.one("nav a[href='/console/alerts']"))
    row = f"#alert-{traffic.alert_id}"
    assert console.all(f"#open-alerts {row}")
    assert "BREAK_GLASS" in console.text(row)
    console.one(f"{row} input[name=note]").send_keys(ACK_NOTE)
    console.submit(console.one(f"{row} button.acknowledge"))
    assert console.driver.current_url.endswith("/console/alerts")
    assert not console.all(row), "the acknowledged alert left the open table"
    done = [
        cells
        for link, cells in zip(
            console.all("#done-alerts tbody tr td:first-child a"),
            console.table("#done-alerts"),
            strict=True,
        )
        if (link.get_attribute("href") or "").endswith(traffic.alert_id)
    ]
    assert len(done) == 1
    assert (done[0][1], done[0][4], done[0][5]) == ("BREAK_GLASS", ANALYST_EMAIL, ACK_NOTE)
    console.screenshot("09-alert-acknowledged")

    # The reader's own reads: every page just opened, on this case.
    console.follow(console.one("nav a[href='/console/me']"))
    assert console.text("main h1") == "Your reads"
    reads = console.table("#events")
    assert {cells[6] for cells in reads} == {ANALYST_EMAIL}, "only the reader's own reads"
    on_case = {cells[10] for cells in reads if cells[7] == CASE_REFERENCE}
    assert {
        "console overview", "console timeline", "console event", "console person", "console break-glass",
        "console alerts", f"console review break-glass {traffic.window_id}",
        f"console acknowledge alert {traffic.alert_id}",
    } <= on_case, on_case  # fmt: skip
    assert "console sign-in" in {cells[10] for cells in reads}
    console.screenshot("10-your-reads")

    # Nothing personal in any URL the browser was sent to.
    assert len(console.visited) >= 12
    assert len(traffic.private) >= 6
    assert all(
        _named_in(f"{console.base}/console/people?q={quote(value)}", value) for value in traffic.private
    )
    leaked = [(url, value) for url in console.visited for value in traffic.private if _named_in(url, value)]
    assert leaked == [], leaked


async def test_a_housing_officer_is_refused(console: Console) -> None:
    console.open("/console/sign-in")
    console.one("input[name=identity][value=housing]").click()
    console.submit(console.one("#demo-sign-in"))
    assert console.error_code() == "CONSOLE_NOT_A_READER"
    assert "does not let you read the ledger" in console.text("#error-message")
    assert not console.all("nav[aria-label=Console]"), "no console navigation for someone refused"
    console.screenshot("11-housing-refused")
    console.open("/console/")
    assert console.driver.current_url.endswith("/console/sign-in"), "the refusal signed nobody in"
