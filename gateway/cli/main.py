"""The `gateway` command group: one sub-command or group from each module of this package."""

from __future__ import annotations

import click

from gateway.cli.audit import audit, sar
from gateway.cli.clients import clients
from gateway.cli.database import db, seed
from gateway.cli.demo import demo
from gateway.cli.keys import keys
from gateway.cli.policies import policies
from gateway.cli.schema import schema
from gateway.cli.serve import serve


@click.group(help="Partner data-sharing gateway. Configure with GATEWAY_* environment variables.")
def main() -> None:
    pass


for command in (db, seed, clients, policies, schema, keys, serve, demo, audit, sar):
    main.add_command(command)
