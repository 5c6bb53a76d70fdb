"""What every `gateway` command shares: settings with clear errors, the database opened as the
command needs it, running a coroutine, and failing with one `error:` line.

Every failure reaches `explain` (through `GatewayGroup`, the `gateway` command's group): a known
cause becomes one line naming it, anything else one line naming its type. The traceback is shown
only with `gateway --debug`. Messages never quote a database URL (it may hold a password) or a
statement's values.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditError, AuditUnavailableError, UnknownPersonError
from gateway.cli.client_files import ClientFileError
from gateway.config import Settings, SettingsError
from gateway.db import (
    RoleError,
    SchemaOutOfDateError,
    create_engine,
    is_sqlite,
    is_unavailable,
    require_current_schema,
)
from gateway.guard import BreakGlassError, DocumentError
from gateway.keys import SigningKeyError
from gateway.oauth import ClientError
from policies import AgreementFileError
from resolvers import PopulationNotEmptyError

T = TypeVar("T")

# Errors that mean "the request cannot be done as asked": their own message is the explanation.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    SettingsError,
    SigningKeyError,
    AgreementFileError,
    ClientError,
    PopulationNotEmptyError,
    UnknownPersonError,
    AuditUnavailableError,
    AuditError,
    SchemaOutOfDateError,
    RoleError,
    ClientFileError,
    DocumentError,
    BreakGlassError,
)


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def explain(error: BaseException) -> str:
    """One line saying why a command failed, for someone who can fix the cause."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error) or type(error).__name__
    if is_unavailable(error):
        cause = _cause(error)
        return f"the database cannot be reached or cannot serve now ({cause}); check GATEWAY_DATABASE_URL"
    if isinstance(error, exc.DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "sqlite_errorname", None)
        return (
            f"the database refused a statement ({type(error.orig).__name__}{f', {state}' if state else ''}); "
            "run `gateway --debug ...` for the statement"
        )
    if isinstance(error, OSError):
        return str(error)
    return f"unexpected {type(error).__name__}; run `gateway --debug ...` to see where"


def _cause(error: BaseException) -> str:
    """The innermost cause's first line: a driver's 'connection refused', never a statement."""
    root: BaseException = error
    while True:
        nested = root.orig if isinstance(root, exc.DBAPIError) and root.orig is not None else root.__cause__
        if nested is None or nested is root:
            break
        root = nested
    lines = str(root).strip().splitlines()
    return lines[0][:200] if lines else type(root).__name__


def load_settings() -> Settings:
    return settings_with()


def settings_with(**overrides: Any) -> Settings:
    """Settings from GATEWAY_* variables (and overrides), or one line naming every bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        fail("; ".join(_problem(e) for e in error.errors()))


def _problem(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message  # a check of the whole configuration: its message names the variable
    return f"GATEWAY_{'_'.join(str(part) for part in error['loc']).upper()}: {message}"


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


@asynccontextmanager
async def open_database(
    settings: Settings, *, migrated: bool = True, read_only: bool = False
) -> AsyncIterator[AsyncEngine]:
    """The database of GATEWAY_DATABASE_URL; `migrated`: refuse one the migrations have not reached
    (instead of failing later on a missing table); `read_only`: a connection that cannot write."""
    engine = create_engine(settings.database_url, read_only=read_only)
    try:
        if read_only and is_sqlite(settings.database_url) and not await _opens(engine):
            # A WAL-mode file on read-only storage, without its -shm: only an immutable open reads it.
            await engine.dispose()
            engine = create_engine(settings.database_url, read_only=True, immutable=True)
        if migrated:
            await require_current_schema(engine)
        yield engine
    finally:
        await engine.dispose()


async def _opens(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM sqlite_master"))
    except exc.OperationalError:
        return False
    return True
