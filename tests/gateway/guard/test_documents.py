"""Trusted documents: registered per client with `gateway documents add`, sent by SHA-256 or as text.

The police, DWP and ONS agreements say `documents: trusted`: nothing else runs for their clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli import main
from gateway.config import Settings
from gateway.guard.documents import CACHE_SECONDS
from gateway.keys import SigningKeys
from tests.conftest import REF_SECRET
from tests.gateway.guard.conftest import Enrol, code_of, events, guarded_app
from tests.support.partners import PURPOSE, Partner

POLICE = "police-prevention"
PAGE = "query Page { people(first: 2) { edges { node { ref familyName } } } }"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _cli(settings: Settings, *args: str, stdin: str | None = None) -> Any:
    env = {"GATEWAY_DATABASE_URL": settings.database_url, "GATEWAY_REF_SECRET": REF_SECRET.decode()}
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


async def _raw(partner: Partner, body: dict[str, Any]) -> Any:
    token = await partner.token()
    return await partner.http.post("/graphql", json=body, headers={**partner.authorization(token), **PURPOSE})


@pytest.fixture
def page_file(tmp_path: Path) -> Path:
    path = tmp_path / "page.graphql"
    path.write_text(PAGE, encoding="utf-8")
    return path


async def test_a_registered_document_runs_by_id_by_apollo_hash_and_by_text_and_nothing_else_does(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, page_file: Path
) -> None:
    async with guarded_app(settings, engine, signing) as (_, http):
        police = await enrolled(POLICE, http)
        police.engine = None  # register through the command line only, as an operator would
        before = await _raw(police, {"query": PAGE})
        assert (before.status_code, code_of(before)) == (400, "DOCUMENT_NOT_TRUSTED")
        assert "familyName" not in before.text

        added = await asyncio.to_thread(
            _cli, settings, "documents", "add", "--client", police.client_id, str(page_file)
        )
        assert added.exit_code == 0, added.output
        assert added.output.split() == [f"sha256:{_sha(PAGE)}", "registered", "Page"]
        again = await asyncio.to_thread(
            _cli, settings, "documents", "add", "--client", police.client_id, str(page_file)
        )
        assert again.output.split()[1:3] == ["already", "registered"]

        await asyncio.sleep(CACHE_SECONDS)  # what each process remembers of the refusal above
        for body in (
            {"documentId": f"sha256:{_sha(PAGE)}"},
            {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": _sha(PAGE)}}},
            {"query": PAGE},
            {"query": PAGE, "documentId": f"sha256:{_sha(PAGE)}"},
        ):
            response = await _raw(police, body)
            assert response.status_code == 200, (body, response.text)
            assert len(response.json()["data"]["people"]["edges"]) == 2
            [event] = await events(engine, id=response.headers["x-audit-event-id"])
            assert (event["document_sha256"], event["operation_name"]) == (_sha(PAGE), "Page")

        # A document that differs by one character is another document.
        changed = await _raw(police, {"query": PAGE.replace("first: 2", "first: 3")})
        assert (changed.status_code, code_of(changed)) == (400, "DOCUMENT_NOT_TRUSTED")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"documentId": "sha256:" + "0" * 64}, 400, "DOCUMENT_NOT_FOUND"),
        ({"documentId": "md5:abc"}, 400, "BAD_REQUEST"),
        ({"documentId": 7}, 400, "BAD_REQUEST"),
        ({"extensions": {"persistedQuery": {"version": 2, "sha256Hash": "0" * 64}}}, 400, "BAD_REQUEST"),
        ({"extensions": "persisted"}, 400, "BAD_REQUEST"),
        ({"query": "{ __typename }", "documentId": "sha256:" + "0" * 64}, 400, "BAD_REQUEST"),
        ({"documentId": "sha256:" + "0" * 64, "extensions": {"persistedQuery": {"sha256Hash": "1" * 64}}},
         400, "BAD_REQUEST"),
        ({}, 400, "BAD_REQUEST"),
    ],
    ids=["unknown id", "not sha256", "not a string", "persisted query version 2", "extensions not an object",
         "text with another hash", "two ids that differ", "nothing to run"],
)  # fmt: skip
async def test_a_document_named_wrongly_is_refused_with_its_code(
    body: dict[str, Any], status: int, code: str, settings: Settings, engine: AsyncEngine,
    signing: SigningKeys, enrolled: Enrol,
) -> None:  # fmt: skip
    async with guarded_app(settings, engine, signing) as (_, http):
        police = await enrolled(POLICE, http)
        response = await _raw(police, body)
        assert (response.status_code, code_of(response)) == (status, code)
        [event] = await events(engine, id=response.headers["x-audit-event-id"])
        assert (event["error_code"], event["people_count"]) == (code, 0)


async def test_where_documents_are_not_trusted_only_text_runs_and_a_registered_id_runs_too(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, tmp_path: Path
) -> None:
    document = "query Hub { people(first: 1) { edges { node { ref } } } }"
    async with guarded_app(settings, engine, signing) as (_, http):
        hub = await enrolled("family-hub-outreach", http)
        assert (
            await _raw(hub, {"query": "{ people(first: 1) { edges { node { ref } } } }"})
        ).status_code == 200
        unknown = await _raw(hub, {"documentId": f"sha256:{_sha(document)}"})
        assert (unknown.status_code, code_of(unknown)) == (400, "DOCUMENT_NOT_FOUND")
        (tmp_path / "hub.graphql").write_text(document, encoding="utf-8")
        added = await asyncio.to_thread(
            _cli, settings, "documents", "add", "--client", hub.client_id, str(tmp_path / "hub.graphql")
        )
        assert added.exit_code == 0, added.output
        await asyncio.sleep(CACHE_SECONDS)
        assert (await _raw(hub, {"documentId": f"sha256:{_sha(document)}"})).status_code == 200


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{ people(first: 2) { edges { node { ref phone } } } }", "not valid in the police-prevention view"),
        ("{ people(first: 2) { edges { node { ref } } }", "syntax error at line 1"),
        ("mutation { x }", "not valid in the police-prevention view"),
        ("query A { __typename } query B { __typename }", ""),
        ("query { a: people(first: 100) { edges { node { ref } } } "
         "b: people(first: 100) { edges { node { ref } } } }", "at most 100 people"),
        ("", "the document is empty"),
    ],
    ids=["another view's field", "syntax error", "a mutation", "two named operations", "too many people",
         "empty"],
)  # fmt: skip
async def test_documents_add_checks_the_document_against_the_clients_view(
    text: str, reason: str, settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol,
    tmp_path: Path,
) -> None:  # fmt: skip
    async with guarded_app(settings, engine, signing) as (_, http):
        police = await enrolled(POLICE, http)
    path = tmp_path / "doc.graphql"
    path.write_text(text, encoding="utf-8")
    result = await asyncio.to_thread(
        _cli, settings, "documents", "add", "--client", police.client_id, str(path)
    )
    if not reason:  # two named operations are a valid document: the request names the one to run
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and reason in line, line
    assert "phone" not in line.split(":", 3)[-1] or "Cannot query field" in line  # names the field, not data


async def test_documents_list_and_remove_and_removal_reaches_the_running_gateway(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, page_file: Path
) -> None:
    async with guarded_app(settings, engine, signing) as (_, http):
        police = await enrolled(POLICE, http)
        police.engine = None
        await asyncio.to_thread(
            _cli, settings, "documents", "add", "--client", police.client_id, str(page_file)
        )
        listed = await asyncio.to_thread(
            _cli, settings, "documents", "list", "--client", police.client_id, "--json"
        )
        [entry] = json.loads(listed.output)
        assert (entry["documentId"], entry["operations"], entry["document"]) == (
            f"sha256:{_sha(PAGE)}",
            ["Page"],
            PAGE,
        )
        assert (await _raw(police, {"documentId": entry["documentId"]})).status_code == 200

        removed = await asyncio.to_thread(
            _cli, settings, "documents", "remove", "--client", police.client_id, entry["documentId"]
        )
        assert removed.exit_code == 0, removed.output
        await asyncio.sleep(CACHE_SECONDS)
        gone = await _raw(police, {"documentId": entry["documentId"]})
        assert (gone.status_code, code_of(gone)) == (400, "DOCUMENT_NOT_FOUND")
        twice = await asyncio.to_thread(
            _cli, settings, "documents", "remove", "--client", police.client_id, entry["documentId"]
        )
        assert twice.exit_code == 1 and twice.output.startswith("error: ")


async def test_documents_add_for_a_client_that_does_not_exist_is_one_error_line(
    settings: Settings, page_file: Path
) -> None:
    result = await asyncio.to_thread(
        _cli, settings, "documents", "add", "--client", "nobody-0000", str(page_file)
    )
    assert (result.exit_code, result.output) == (1, "error: no client nobody-0000\n")
