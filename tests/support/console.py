"""A security-team reader of the console, driven over HTTP the way a browser would: the session
cookie kept by the client, each form posted with the CSRF token its page carried."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ERROR_CODE = re.compile(r'id="error-code">([^<]+)<')
LEDGER_EVENT = re.compile(
    r"recorded in the access ledger as event <a href=\"/console/events/([0-9a-f]{32})\""
)
ANALYST_EMAIL = "security.analyst@council.demo.invalid"


def error_code(response: httpx.Response) -> str | None:
    found = ERROR_CODE.search(response.text)
    return found.group(1) if found else None


def recorded_as(response: httpx.Response) -> str | None:
    """The ledger event a page says it was recorded as."""
    found = LEDGER_EVENT.search(response.text)
    return found.group(1) if found else None


@dataclass
class Reader:
    http: httpx.AsyncClient
    csrf: str = field(default="")

    async def sign_in_demo(self, identity: str = "analyst") -> httpx.Response:
        page = await self.http.get("/console/sign-in")
        token = CSRF.search(page.text)
        assert token is not None, page.text
        return await self.http.post(
            "/console/sign-in/demo", data={"csrf": token.group(1), "identity": identity}
        )

    async def give_purpose(self, case_reference: str = "INV-2026-0042") -> httpx.Response:
        page = await self.http.get("/console/purpose")
        self.csrf = _csrf(page)
        return await self.http.post(
            "/console/purpose", data={"csrf": self.csrf, "case_reference": case_reference}
        )

    async def signed_in(self, case_reference: str = "INV-2026-0042") -> Reader:
        signed = await self.sign_in_demo()
        assert signed.status_code == 303 and signed.headers["location"] == "/console/purpose", signed.text
        given = await self.give_purpose(case_reference)
        assert given.status_code == 303, given.text
        return self

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form["csrf"] = self.csrf
        return await self.http.post(path, data=form)


def _csrf(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)
