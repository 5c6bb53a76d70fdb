"""Where a running gateway's CPU goes: py-spy's samples of the process, summed by component.

`record(pid, seconds, out)` samples a process (py-spy, without pausing it) while the caller loads it;
`summary(out)` sums the samples by the component their innermost frame belongs to (the first rule
that matches, in order) and lists the functions most often on CPU. Idle samples (the event loop
waiting) are not taken, so the shares are of the CPU the process used.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Final

# (component, substrings of a frame's file), first match wins; a frame of none is "other (C, builtins)".
COMPONENTS: Final = (
    ("ledger (events, hashes, writer)", ("gateway/audit/",)),
    ("rate limits, quotas, watch (guard)", ("gateway/guard/", "limits/")),
    ("Redis client", ("redis/", "hiredis")),
    ("compiled path (plan, shape)", ("schema/compiled.py",)),
    ("resolvers (SQL, records, refs)", ("resolvers/",)),
    ("graphql-core and strawberry", ("graphql/", "strawberry/")),
    ("token, proof, client state", ("gateway/oauth/", "joserfc/", "authlib/", "cryptography/")),
    ("OpenTelemetry", ("opentelemetry/",)),
    ("logging", ("logging/", "gateway/logs.py")),
    ("Prometheus metrics", ("prometheus_client/", "gateway/metrics.py")),
    ("SQLAlchemy (pool, Core)", ("sqlalchemy/", "greenlet")),
    ("asyncpg (driver)", ("asyncpg/",)),
    ("endpoint and routes (gateway)", ("gateway/", "policies/", "schema/")),
    ("uvicorn and Starlette", ("uvicorn/", "starlette/", "httptools")),
    ("asyncio and uvloop", ("asyncio/", "uvloop")),
)
_LINE: Final = re.compile(r"^(.*) (\d+)$")


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def record(pid: int, seconds: int, out: Path, *, rate: int = 250) -> subprocess.Popen[bytes]:
    """Starts sampling `pid` for `seconds` into `out` (collapsed stacks); wait() on what it returns."""
    spy = py_spy()
    if spy is None:
        raise SystemExit("py-spy is not installed (it is in the dev dependencies: make install)")
    command = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    command += ["--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def _component(frame: str) -> str | None:
    for name, parts in COMPONENTS:
        if any(part in frame for part in parts):
            return name
    return None


def summary(out: Path, *, top: int = 12) -> str:
    by_component: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in out.read_text(encoding="utf-8").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        frames, count = match.group(1).split(";"), int(match.group(2))
        total += count
        component = next(
            (found for frame in reversed(frames) if (found := _component(frame))), "other (C, builtins)"
        )
        by_component[component] += count
        by_function[re.sub(r":\d+\)$", ")", frames[-1]) or "(native)"] += count
    if not total:
        return "    no samples"
    lines = [f"    {100 * n / total:5.1f}%  {name}" for name, n in by_component.most_common()]
    lines.append(f"    on CPU most often ({total:,} samples):")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    return "\n".join(lines)
