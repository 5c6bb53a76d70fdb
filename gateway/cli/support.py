"""What every `gateway` command shares: settings with clear errors, running a coroutine, failing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from gateway.audit import AuditUnavailableError, UnknownPersonError
from gateway.config import Settings, SettingsError
from gateway.keys import SigningKeyError
from gateway.oauth import ClientError
from policies import AgreementFileError
from resolvers import PopulationNotEmptyError

T = TypeVar("T")

# Errors that mean "the request cannot be done as asked": shown as one line, exit status 1.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    SettingsError,
    SigningKeyError,
    AgreementFileError,
    ClientError,
    PopulationNotEmptyError,
    UnknownPersonError,
    AuditUnavailableError,
)


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"GATEWAY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        fail(problems)


def settings_with(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as error:
        fail("; ".join(str(e["msg"]) for e in error.errors()))


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(factory())
    except EXPECTED_ERRORS as error:
        fail(str(error) or type(error).__name__)
