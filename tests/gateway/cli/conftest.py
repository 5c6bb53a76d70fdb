"""The `gateway` command as a process against the session's own database, for tests that then talk to
the same database over HTTP."""

from __future__ import annotations

import os
import subprocess
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.keys import SigningKeys, write_key_file
from tests.support.processes import GATEWAY, gateway_env


@pytest.fixture(scope="module")
def session_cli_env(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, signing: SigningKeys
) -> tuple[dict[str, str], Path]:
    """The variables and working directory of a command on the session's database. It signs with the
    session's key: its chain lands in the session's ledger, which other tests verify."""
    directory = tmp_path_factory.mktemp("cli")
    write_key_file(directory / "signing.jwk.json", [signing.active])
    return gateway_env(directory, database_url), directory


def run_gateway(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One command, whatever its exit status: the `gateway` command's own code, run in this process (in
    a thread of its own, for its own event loop) rather than a new interpreter per command, which cost a
    second and a half of start-up each. Its environment is exactly `env`, as a process's would be."""

    def invoke() -> subprocess.CompletedProcess[str]:
        with _working_directory(cwd):
            result = CliRunner().invoke(main, list(args), env=_exactly(env), prog_name="gateway")
        stderr = result.stderr
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            # What a process would have printed as it died: a test of "one error line" must see it.
            stderr += "".join(traceback.format_exception(*result.exc_info))
        return subprocess.CompletedProcess([GATEWAY, *args], result.exit_code, result.stdout, stderr)

    with _ONE_AT_A_TIME, ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(invoke).result(timeout=120)


_ONE_AT_A_TIME = threading.Lock()  # the environment and the working directory are the process's


def _exactly(env: dict[str, str]) -> dict[str, str | None]:
    """`env`, and every GATEWAY_* variable it does not name unset, as in a process started with `env`."""
    unset: dict[str, str | None] = {name: None for name in os.environ if name.startswith("GATEWAY_")}
    return {**unset, **env}


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
