"""wrk (Debian's package) run once, and what it printed, for the load benchmarks."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WrkRun:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int


def run_wrk(url: str, script: Path, seconds: int, connections: int, *, cpu: str | None = None) -> WrkRun:
    """One thread, `connections` connections, for `seconds`; on CPU `cpu` (taskset) when given."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert requests and rps, out
    return WrkRun(
        float(rps.group(1)), latency("50"), latency("99"), int(requests.group(1)),
        int(non_2xx.group(1)) if non_2xx else 0,
    )  # fmt: skip
