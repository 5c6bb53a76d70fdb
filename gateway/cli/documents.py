"""`gateway documents add|list|remove`: the trusted documents each client may run."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from gateway.cli.support import fail, load_settings, open_database, run
from gateway.guard import DocumentError, TrustedDocument, add_document, list_documents, remove_document
from gateway.oauth import get_client
from policies import load_agreements
from schema import build_view


@click.group(help="Trusted documents: the GraphQL documents a client may run, sent by their SHA-256.")
def documents() -> None:
    pass


@documents.command(
    "add",
    help="Check FILE.graphql against the client's view (every rule and limit a request meets) and register "
    "it; prints its documentId. Adding the same document again changes nothing.",
)
@click.option("--client", "client_id", required=True)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
def documents_add(client_id: str, files: tuple[Path, ...]) -> None:
    settings = load_settings()
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            fail(f"{file}: cannot read it ({getattr(error, 'strerror', None) or type(error).__name__})")

    async def add() -> list[tuple[TrustedDocument, bool]]:
        async with open_database(settings) as engine, engine.begin() as conn:
            client = await get_client(conn, client_id)
            if client is None:
                raise DocumentError(f"no client {client_id}")
            agreement = load_agreements(settings.agreements_dir).get(client.agreement_id)
            if agreement is None:
                raise DocumentError(f"client {client_id}'s agreement {client.agreement_id} is not loaded")
            view = build_view(agreement, max_tokens=settings.max_query_tokens)
            added = []
            for file, text in zip(files, texts, strict=True):
                try:
                    added.append(
                        await add_document(
                            conn,
                            client_id=client_id,
                            text=text,
                            view=view,
                            added_by=getpass.getuser(),
                            max_tokens=settings.max_query_tokens,
                        )
                    )
                except DocumentError as error:
                    raise DocumentError(f"{file}: {error}") from None
            return added

    for document, new in run(add):
        state = "registered" if new else "already registered"
        names = ", ".join(name or "(unnamed)" for name in document.operation_names)
        click.echo(f"sha256:{document.sha256}  {state}  {names}")


@documents.command("list", help="The registered documents, of one client or all.")
@click.option("--client", "client_id", default=None)
@click.option("--json", "as_json", is_flag=True)
def documents_list(client_id: str | None, as_json: bool) -> None:
    settings = load_settings()

    async def read() -> list[TrustedDocument]:
        async with open_database(settings) as engine, engine.connect() as conn:
            return await list_documents(conn, client_id)

    found = run(read)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "client_id": d.client_id,
                        "documentId": f"sha256:{d.sha256}",
                        "operations": list(d.operation_names),
                        "added_at": d.added_at.isoformat(),
                        "added_by": d.added_by,
                        "document": d.document,
                    }
                    for d in found
                ],
                indent=2,
            )
        )
        return
    for d in found:
        names = ", ".join(name or "(unnamed)" for name in d.operation_names)
        click.echo(f"{d.client_id}  sha256:{d.sha256}  {names}")


@documents.command("remove", help="Stop a client running a document (every process, within seconds).")
@click.option("--client", "client_id", required=True)
@click.argument("document_id")
def documents_remove(client_id: str, document_id: str) -> None:
    settings = load_settings()
    sha = document_id.removeprefix("sha256:")

    async def remove() -> bool:
        async with open_database(settings) as engine, engine.begin() as conn:
            return await remove_document(conn, client_id=client_id, sha256=sha)

    if not run(remove):
        fail(f"client {client_id} has no document {document_id}")
    click.echo(f"removed sha256:{sha} from {client_id}")
