"""`gateway demo`: a fresh SQLite database, a synthetic population, a client per agreement, then serve."""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from pathlib import Path
from typing import Final

import click

from gateway.cli.client_files import ClientFile, new_key, public_jwks, read_client_file, stand_in_issuer
from gateway.cli.clients import add_clients
from gateway.cli.database import DEMO_PEOPLE, seed_database, upgrade_database
from gateway.cli.keys import ensure_secrets
from gateway.cli.serve import serve_app
from gateway.cli.support import fail, load_settings, open_database, run, settings_with
from gateway.config import Settings, council_today, is_loopback
from gateway.db import is_sqlite
from gateway.guard import add_document
from policies import load_agreements
from schema import build_view

DEMO_STATE_DIR: Final = Path("var")
DEMO_CLIENTS_DIR: Final = DEMO_STATE_DIR / "demo-clients"
DEMO_DOCUMENTS_DIR: Final = Path(__file__).parent / "demo_documents"  # a folder per agreement; top level: all
README_AGREEMENT: Final = "police-prevention"  # the README's example queries as the police


@click.command(help="Fresh SQLite database, synthetic population, a demo client per agreement, then serve.")
@click.option(
    "--people", "people_count", type=click.IntRange(1, 2_000_000), default=DEMO_PEOPLE, show_default=True
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Prepare everything and exit.")
def demo(people_count: int, host: str, port: int, no_serve: bool) -> None:
    settings = load_settings()
    if not is_loopback(host):
        # The demo signs anyone in to the security console without a password: never off this machine.
        fail(f"the demo serves on a loopback address only (127.0.0.1 or ::1), not {host}")
    if "GATEWAY_ISSUER" not in os.environ:
        # Tokens name the address the demo actually serves on, so the metadata points at it.
        settings = settings_with(issuer=f"http://{host}:{port}")
    if not is_sqlite(settings.database_url):
        fail(
            "the demo builds a fresh SQLite database; unset GATEWAY_DATABASE_URL or point it at a sqlite file"
        )
    database = Path(settings.database_url.split("///", 1)[1])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{database}.chains", ignore_errors=True)  # the old database's chain locks
    witness = settings.witness.directory if settings.witness else None
    if witness is not None and witness.resolve().is_relative_to(DEMO_STATE_DIR.resolve()):
        shutil.rmtree(witness, ignore_errors=True)  # the old database's evidence, gone with it
    ensure_secrets(settings)
    run(lambda: upgrade_database(settings))
    summary = run(lambda: seed_database(settings, people_count, 1, council_today(), show_progress=True))
    files = _demo_clients(settings)
    documents = run(lambda: _demo_documents(settings, files))
    base = f"http://{host}:{port}"
    click.echo(
        f"\nDemo ready: {summary['people']} synthetic people in {database}.\n"
        f"A client file per agreement (its keys, private: keep it so) is in {DEMO_CLIENTS_DIR}/; "
        f"{len(files)} clients authenticate with private_key_jwt and DPoP-bound tokens; "
        f"{documents} documents are registered for the clients that run only trusted documents "
        f"({DEMO_DOCUMENTS_DIR.relative_to(Path(__file__).parent.parent.parent)}/, and the query below).\n\n"
        "Query as the Metropolitan Police, from another terminal in this directory (the reference client\n"
        "signs the client assertion and the DPoP proofs, and exchanges the officer's token):\n\n"
        f"{textwrap.indent(demo_example(base), '  ')}\n"
        "Doing the same by hand, with any OAuth library: docs/partners.md.\n\n"
        f"The security console: {base}/console/ (sign in with the demo's local sign-in as the security\n"
        "analyst; give any case reference, such as DEMO-1; every page you open is recorded in the ledger).\n"
    )
    if not no_serve:
        serve_app(settings, host, port, demo=True)


def _demo_clients(settings: Settings) -> dict[str, Path]:
    """A client per agreement with keys made here, and for an agreement with verified officers a
    stand-in for the partner's identity provider (gateway/cli/client_files.py says why only here)."""
    agreements = load_agreements(settings.agreements_dir)
    shutil.rmtree(DEMO_CLIENTS_DIR, ignore_errors=True)
    keys = {agreement_id: (new_key(), new_key()) for agreement_id in sorted(agreements)}
    wanted = [(a, f"Demo {a}", public_jwks(signing), False) for a, (signing, _) in keys.items()]
    created = dict(zip(keys, run(lambda: add_clients(settings, wanted)), strict=True))
    files = {}
    for agreement_id, (signing, dpop) in keys.items():
        issuers = agreements[agreement_id].access.officer_issuers
        stand_in = stand_in_issuer(issuers[0], settings.partner_jwks_dir) if issuers else None
        file = ClientFile(
            created[agreement_id].record.client_id, agreement_id, settings.issuer, signing, dpop, stand_in
        )
        files[agreement_id] = DEMO_CLIENTS_DIR / f"{agreement_id}.json"
        file.write(files[agreement_id])
    return files


async def _demo_documents(settings: Settings, files: dict[str, Path]) -> int:
    """Register the demo's documents (and the README's query) for each client that needs them."""
    agreements = load_agreements(settings.agreements_dir)
    count = 0
    async with open_database(settings) as engine, engine.begin() as conn:
        for agreement_id, path in files.items():
            agreement = agreements[agreement_id]
            if not agreement.access.trusted_documents_only:
                continue
            texts = [
                file.read_text(encoding="utf-8")
                for file in sorted((DEMO_DOCUMENTS_DIR / agreement_id).glob("*.graphql"))
            ]
            if agreement_id == README_AGREEMENT:
                texts.append(readme_query())
            # Every person view's Art 19 feed and its acknowledgement (the folder's top level: every view).
            if not agreement.is_ledger:
                texts += [
                    file.read_text(encoding="utf-8") for file in sorted(DEMO_DOCUMENTS_DIR.glob("*.graphql"))
                ]
            client_id = read_client_file(path).client_id
            view = build_view(agreement, max_tokens=settings.max_query_tokens)
            for text in texts:
                await add_document(
                    conn, client_id=client_id, text=text, view=view, added_by="gateway demo",
                    max_tokens=settings.max_query_tokens,
                )  # fmt: skip
                count += 1
    return count


def readme_query() -> str:
    """The query of the README's example, exactly as the reference client sends it."""
    found = re.search(
        r"--query '([^']*)'", (Path(__file__).parent / "demo_example.sh").read_text(encoding="utf-8")
    )
    assert found is not None, "demo_example.sh names its query with --query '...'"
    return found.group(1)


def demo_example(base: str) -> str:
    """The README's copy-paste example, for a gateway served at `base`."""
    template = (Path(__file__).parent / "demo_example.sh").read_text(encoding="utf-8")
    return template.replace("{base}", base)
