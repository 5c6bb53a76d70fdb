"""The `gateway` command as a process against the session's own database, for tests that then talk to
the same database over HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
    """One command, whatever its exit status."""
    return subprocess.run(
        [GATEWAY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
