"""`gateway schema export [--check]`: the SDL snapshot of every partner's view (schema/views/)."""

from __future__ import annotations

import click

from gateway.cli.support import fail, load_settings
from policies import AgreementFileError, load_agreements
from schema import build_views
from schema.snapshots import stale_snapshots, write_snapshots


@click.group(help="GraphQL views.")
def schema() -> None:
    pass


@schema.command("export", help="Write schema/views/<agreement>.graphql; with --check, fail if they differ.")
@click.option("--check", is_flag=True)
def schema_export(check: bool) -> None:
    settings = load_settings()
    try:
        views = build_views(load_agreements(settings.agreements_dir).values())
    except AgreementFileError as error:
        fail(str(error))
    if check:
        stale = stale_snapshots(views)
        if stale:
            fail(f"out of date: {', '.join(stale)} (run `gateway schema export`)")
        click.echo(f"{len(views)} view snapshots are up to date")
        return
    changed = write_snapshots(views)
    click.echo(f"wrote {len(views)} view snapshots; changed: {', '.join(changed) or 'none'}")
