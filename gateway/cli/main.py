"""The `gateway` command group: one sub-command or group from each module of this package.

Every failure ends as one `error:` line and exit status 1 (`support.explain`); `--debug` shows the
traceback instead.
"""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.audit import audit, sar
from gateway.cli.clients import clients
from gateway.cli.database import db, seed
from gateway.cli.demo import demo
from gateway.cli.keys import keys
from gateway.cli.policies import policies
from gateway.cli.schema import schema
from gateway.cli.serve import serve
from gateway.cli.support import explain


class GatewayGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {explain(error)}", err=True)
            ctx.exit(1)


@click.group(
    cls=GatewayGroup, help="Partner data-sharing gateway. Configure with GATEWAY_* environment variables."
)
@click.option("--debug", is_flag=True, help="On failure, show the traceback rather than one line.")
def main(debug: bool) -> None:
    pass


for command in (db, seed, clients, policies, schema, keys, serve, demo, audit, sar):
    main.add_command(command)
