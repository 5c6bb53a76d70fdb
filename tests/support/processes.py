"""The `gateway` command as real processes: one-off commands, and `gateway serve` until the block ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

GATEWAY = str(Path(sys.executable).parent / "gateway")
STARTED = "Application startup complete"  # uvicorn's line, once per worker, at info level


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one command; it must succeed."""
    done = subprocess.run(
        [GATEWAY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


@contextmanager
def serving(
    env: dict[str, str], cwd: Path, port: int, *, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """`gateway serve` on 127.0.0.1:`port` until the block ends (then SIGTERM), from when every worker
    has started: a loaded machine may start one worker seconds after the other, and until then the first
    answers every connection."""
    command = [GATEWAY, "serve", "--port", str(port), "--workers", str(workers)]
    with running(command, env, cwd, port, started=workers) as process:
        yield process


@contextmanager
def running(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    port: int,
    *,
    seconds: float = 60,
    started: int = 1,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` (a server) until its /livez on 127.0.0.1:`port` answers 200 and its log says `started`
    processes have completed start-up, then until the block ends: SIGTERM to its process group (its
    workers too), SIGKILL if it has not stopped within 30 s."""
    log_path = cwd / f"serve-{port}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + seconds
            while True:
                try:
                    live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
                except httpx.HTTPError:
                    live = False
                if live and (started == 1 or log_path.read_text().count(STARTED) >= started):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise AssertionError(f"{' '.join(command)} did not serve:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield process
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group `process` leads (started with start_new_session: its workers
    too), as an orchestrator stops a server; SIGKILL if it has not stopped within 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def trust(env: dict[str, str], cwd: Path, client_file: Path, document: str) -> None:
    """Register `document` for the client in `client_file`, as the council's operator does."""
    from gateway.cli.client_files import read_client_file

    path = cwd / f"document-{time.monotonic_ns()}.graphql"
    path.write_text(document, encoding="utf-8")
    gateway(env, cwd, "documents", "add", "--client", read_client_file(client_file).client_id, str(path))


HUB_LIMITS = "limits: {max_page_size: 100, people_per_day: 2000}"


def agreements_with_hub_limits(directory: Path, limits: str) -> Path:
    """A copy of the shipped agreements in `directory`, with family-hub-outreach's `limits:` replaced."""
    from policies import AGREEMENTS_DIR

    directory.mkdir()
    for path in AGREEMENTS_DIR.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if path.stem == "family-hub-outreach":
            assert HUB_LIMITS in text
            text = text.replace(HUB_LIMITS, f"limits: {{{limits}}}")
        (directory / path.name).write_text(text, encoding="utf-8")
    return directory


def gateway_env(cwd: Path, database_url: str, **more: str) -> dict[str, str]:
    """The variables of a `gateway` process whose keys and witness live in `cwd`; `more` adds or
    overrides (as GATEWAY_* names)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_ISSUER": "http://127.0.0.1:8000",  # the public URL; each process listens elsewhere
        "GATEWAY_SIGNING_KEY_FILE": str(cwd / "signing.jwk.json"),
        "GATEWAY_REF_SECRET_FILE": str(cwd / "ref-secret"),
        "GATEWAY_AUDIT_WITNESS": str(cwd / "witness"),
        **more,
    }
