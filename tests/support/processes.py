"""The `gateway` command as real processes: one-off commands, and `gateway serve` until the block ends."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

GATEWAY = str(Path(sys.executable).parent / "gateway")


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
    """`gateway serve` on 127.0.0.1:`port` until the block ends (then SIGTERM)."""
    log = (cwd / f"serve-{port}-{time.monotonic_ns()}.log").open("wb")
    process = subprocess.Popen(
        [GATEWAY, "serve", "--port", str(port), "--workers", str(workers)],
        env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway serve did not start: {log.name}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


def trust(env: dict[str, str], cwd: Path, client_file: Path, document: str) -> None:
    """Register `document` for the client in `client_file`, as the council's operator does."""
    from gateway.cli.client_files import read_client_file

    path = cwd / f"document-{time.monotonic_ns()}.graphql"
    path.write_text(document, encoding="utf-8")
    gateway(env, cwd, "documents", "add", "--client", read_client_file(client_file).client_id, str(path))
