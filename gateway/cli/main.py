"""The `gateway` command group: one sub-command or group from each module of this package.

Every failure ends as one `error:` line and exit status 1 (`support.explain`); `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from gateway.cli.audit import audit, sar
from gateway.cli.breakglass import breakglass
from gateway.cli.clients import clients
from gateway.cli.database import db, seed
from gateway.cli.demo import demo
from gateway.cli.documents import documents
from gateway.cli.eligibility import eligibility
from gateway.cli.evidence import evidence_command
from gateway.cli.keys import keys
from gateway.cli.partner import partner
from gateway.cli.policies import policies
from gateway.cli.referrals import referrals
from gateway.cli.retention import retention
from gateway.cli.rights import rights
from gateway.cli.schema import schema
from gateway.cli.serve import serve
from gateway.cli.support import explain


class GatewayGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        if not ctx.params.get("debug"):
            warnings = _HeldWarnings()
            logging.getLogger().addHandler(warnings)
            ctx.call_on_close(warnings.summarise)
        else:
            logging.basicConfig(level=logging.DEBUG)
        try:
            return super().invoke(ctx)
        except SystemExit as stopped:
            if stopped.code:
                _held_warnings_fail()
            raise
        except click.exceptions.UsageError as wrong:
            # One line, like every failure: what was wrong, and where the usage is.
            _held_warnings_fail()
            where = wrong.ctx.command_path if wrong.ctx is not None else ctx.command_path
            click.echo(f"error: {wrong.format_message()} (see {where} --help)", err=True)
            ctx.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            _held_warnings_fail()
            raise
        except BrokenPipeError:
            ctx.exit(1)  # whoever read the output stopped reading: nothing to say, and nowhere to say it
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            _held_warnings_fail()  # the error line says what matters
            click.echo(f"error: {explain(error)}", err=True)
            ctx.exit(1)


class _HeldWarnings(logging.Handler):
    """Holds the gateway's log records while a command runs: a failure is explained in one line by
    the group, and a command that succeeds despite warnings says so in one line, not a traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def summarise(self) -> None:
        logging.getLogger().removeHandler(self)
        if self.messages and not self.failed:
            more = (
                f" ({len(self.messages)} warnings; `gateway --debug ...` shows them)"
                if len(self.messages) > 1
                else ""
            )
            click.echo(f"warning: {self.messages[0]}{more}", err=True)


def _held_warnings_fail() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _HeldWarnings):
            handler.failed = True


@click.group(
    cls=GatewayGroup, help="Partner data-sharing gateway. Configure with GATEWAY_* environment variables."
)
@click.option("--debug", is_flag=True, help="On failure, show the traceback rather than one line.")
def main(debug: bool) -> None:
    pass


for command in (
    db,
    seed,
    clients,
    documents,
    policies,
    schema,
    keys,
    serve,
    demo,
    audit,
    sar,
    breakglass,
    rights,
    retention,
    evidence_command,
    eligibility,
    referrals,
    partner,
):
    main.add_command(command)
