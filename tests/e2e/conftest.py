"""One `gateway demo`, run as a newcomer runs it, shared by the tests of the README and the guides."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass(frozen=True)
class Demo:
    base: str  # where it serves
    directory: Path  # where it runs, laid out as the repository is: var/ beside .venv/

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def running_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    directory = tmp_path_factory.mktemp("demo")
    (directory / ".venv").symlink_to(Path(sys.executable).parent.parent)
    gateway = Path(sys.executable).parent / "gateway"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    log = (directory / "demo.log").open("w")
    process = subprocess.Popen(
        [str(gateway), "demo", "--people", "400", "--port", str(port)],
        cwd=directory,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"gateway demo exited: {(directory / 'demo.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("gateway demo did not serve within 90 s")
            time.sleep(0.25)
        yield Demo(base, directory)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
