"""`make bench`: the gateway against a floor, from outside, as a partner's load arrives.

    .venv/bin/python -m bench.speed [--people 200000] [--rounds 2] [--seconds 10] [--connections 16]
                                    [--redis URL | --no-redis] [--profile]

On a fresh PostgreSQL database (on the server of GATEWAY_TEST_POSTGRES_URL, dropped afterwards) seeded
with synthetic people, two servers run side by side, each one uvicorn worker pinned to CPU 1:

- the gateway, as `gateway serve` runs in production: ledger, witness, token check, client state,
  revocation, rate limits, quotas, trusted documents all on; its shared state (replay guard, rate
  counters, each client's daily set of people) in Redis, as several workers or replicas keep it
  (`--no-redis`: in PostgreSQL, and the rate counters in memory, as a single process may);
- the floor (bench/floor.py): the same SQL through asyncpg behind a bare Starlette route, the same
  JSON, nothing else.

wrk (Debian's package), pinned to CPU 0, loads one at a time at `--connections`, over thousands of
distinct bodies (random cursors; 1,000 lookup keys), the two servers' rounds interleaved. Printed for
the police page (100 people), the police lookup and the DWP page (100 people): requests per second,
p50 and p99, server, PostgreSQL and Redis CPU per request (from /proc), and gateway / floor. Then the
gateway's CPU per request at page sizes 10, 50 and 100, fitted as a fixed cost plus a cost per person.
After every gateway run the ledger must hold exactly one event per request the gateway answered
(its own request counter, from /metrics). `--profile`: then each workload once more while py-spy samples
the gateway (bench/profile.py), printed as shares of its CPU by component and the functions most on CPU.

wrk cannot sign a DPoP proof per request, so the benchmark's copy of the agreements gives the police
and DWP clients a shared secret, bearer tokens and an asserted officer (bench.graphql_load's
`bench_agreements`), with daily quotas raised past what a run asks for; everything else is shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from bench import profile as bench_profile
from bench.graphql_load import SECRET, TODAY, bench_agreements
from bench.wrk import run_wrk
from gateway.audit.tables import audit_events
from gateway.db import create_engine, upgrade
from gateway.guard import add_document
from gateway.oauth import add_client
from policies import load_agreements
from resolvers import RefCodec, seed_population
from resolvers.models import assessments, people
from resolvers.refs import RefKind
from schema import build_view
from tests.support.databases import DEFAULT_REDIS_URL, postgres_database
from tests.support.processes import GATEWAY, free_port

POLICE_PAGE = (
    "query Page($first: Int, $after: String) { people(first: $first, after: $after) "
    "{ edges { node { ref givenName familyName dateOfBirth postcode } } "
    "pageInfo { hasNextPage endCursor } } }"
)
LOOKUP = (
    "query Lookup($familyName: String!, $dateOfBirth: Date!) { findPeople(familyName: $familyName, "
    "dateOfBirth: $dateOfBirth) { ref givenName familyName dateOfBirth postcode } }"
)
DWP_PAGE = (
    "query DwpPage($first: Int, $after: String) { people(first: $first, after: $after) "
    "{ edges { node { ref address { line1 line2 town postcode } uprn } } "
    "pageInfo { hasNextPage endCursor } } }"
)
SERVER_CPU, LOAD_CPU = "1", "0"
ROOT = str(Path(__file__).resolve().parent.parent)
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    server_cpu_ms: float  # per request
    postgres_cpu_ms: float  # per request
    redis_cpu_ms: float  # per request


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def _tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        for child in children.read_text().split():
            found += _tree(int(child))
    return found


def _postgres_ticks(name: str = "postgres") -> dict[int, int]:
    """CPU ticks of each PostgreSQL process now (or of each process called `name`). A backend that
    exits during a run takes its ticks with it, so PostgreSQL's CPU is, if anything, under-counted
    (connection churn shows up as less)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if f"({name})" in text:
            fields = text.rsplit(")", 1)[1].split()
            found[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    return found


def _lua(bodies: list[str], headers: dict[str, str], directory: Path) -> Path:
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{name}"] = {json.dumps(value)}' for name, value in headers.items()]
    lines.append("local bodies = {")
    lines += [f"  {json.dumps(body)}," for body in bodies]
    lines += [
        "}",
        "math.randomseed(20261130)",
        "request = function() return wrk.format(nil, nil, nil, bodies[math.random(#bodies)]) end",
    ]
    script = directory / f"load-{time.monotonic_ns()}.lua"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


def _measure(pid: int, url: str, script: Path, seconds: int, connections: int) -> Run:
    run_wrk(url, script, 2, connections, cpu=LOAD_CPU)  # warm-up
    server, postgres, redis = (
        sum(_cpu_ticks(p) for p in _tree(pid)),
        _postgres_ticks(),
        _postgres_ticks("redis-server"),
    )
    done = run_wrk(url, script, seconds, connections, cpu=LOAD_CPU)
    rps, p50, p99, requests, non_2xx = (
        done.requests_per_second,
        done.p50_ms,
        done.p99_ms,
        done.requests,
        done.non_2xx,
    )
    server = sum(_cpu_ticks(p) for p in _tree(pid)) - server
    after = _postgres_ticks()
    postgres_used = sum(ticks - postgres.get(p, 0) for p, ticks in after.items())
    redis_used = sum(ticks - redis.get(p, 0) for p, ticks in _postgres_ticks("redis-server").items())
    per = 1000 / TICKS / max(requests, 1)
    return Run(rps, p50, p99, requests, non_2xx, server * per, postgres_used * per, redis_used * per)


@contextmanager
def _serving(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own servers
            ["taskset", "-c", SERVER_CPU, *command],  # noqa: S607
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)  # the floor answers 404
                    break
                except httpx.HTTPError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"{command[0]} did not start: {log}") from None
                    time.sleep(0.2)
            yield process.pid
        finally:
            process.terminate()
            process.wait(timeout=60)


def _metrics_requests(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{") and 'endpoint="graphql"' in line
    )


async def _ledger_events(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                select(func.count()).select_from(audit_events).where(audit_events.c.endpoint == "graphql")
            )
            return int(found.scalar_one())
    finally:
        await engine.dispose()


async def _prepare(url: str, people_count: int, agreements_dir: Path) -> dict[str, Any]:
    engine = create_engine(url)
    await upgrade(engine)
    print(f"seeding {people_count:,} synthetic people into a fresh PostgreSQL database ...", flush=True)
    agreements = load_agreements(agreements_dir)
    clients: dict[str, Any] = {}
    async with engine.begin() as conn:
        await seed_population(conn, people_count=people_count, seed=1, today=TODAY)
        for agreement_id, documents in (
            ("police-prevention", (POLICE_PAGE, LOOKUP)), ("dwp-worklessness", (DWP_PAGE,)),
        ):  # fmt: skip
            made = await add_client(
                conn, agreement_id=agreement_id, known_agreements=set(agreements), with_secret=True
            )
            view = build_view(agreements[agreement_id])
            for document in documents:
                await add_document(
                    conn, client_id=made.record.client_id, text=document, view=view, added_by="bench",
                    max_tokens=2_000,
                )  # fmt: skip
            clients[agreement_id] = (made.record.client_id, made.secret)
    rng = random.Random(7)
    async with engine.connect() as conn:
        members = (
            await conn.execute(
                select(people.c.family_name, people.c.date_of_birth)
                .join(assessments, assessments.c.household_id == people.c.household_id)
                .where(assessments.c.eligible.is_(True), people.c.restricted.is_(False),
                       people.c.protected_address.is_(False))
                .order_by(people.c.id)
            )
        ).all()  # fmt: skip
        top = int((await conn.execute(select(func.max(people.c.id)))).scalar_one())
    # Settled before anything is measured: the tables analysed and in the cache, the seeding's WAL
    # checkpointed, so that neither autovacuum nor a cold cache lands on whichever server runs first.
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
        await conn.execute(text("CHECKPOINT"))
    await engine.dispose()
    keys = rng.sample(members, min(1_000, len(members)))
    return {"clients": clients, "keys": keys, "top": top}


def _bodies(kind: str, top: int, keys: list[Any], size: int, count: int = 2_000) -> list[str]:
    rng = random.Random(f"{kind}{size}")
    if kind == "lookup":
        return [
            json.dumps({"query": LOOKUP, "operationName": "Lookup", "variables": {
                "familyName": k.family_name, "dateOfBirth": k.date_of_birth.isoformat()}})
            for k in keys
        ]  # fmt: skip
    agreement, query, name = (
        ("police-prevention", POLICE_PAGE, "Page")
        if kind == "police"
        else ("dwp-worklessness", DWP_PAGE, "DwpPage")
    )
    refs = RefCodec(SECRET, agreement)
    out = []
    for _ in range(count):
        after = rng.randrange(1, max(2, top - 20 * size))
        variables = {"first": size, "after": refs.encode(RefKind.CURSOR, after)}
        out.append(json.dumps({"query": query, "operationName": name, "variables": variables}))
    return out


def _token(base: str, client: tuple[str, str]) -> str:
    answer = httpx.post(
        f"{base}/oauth/token", data={"grant_type": "client_credentials"}, auth=client, timeout=30
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert isinstance(token, str)
    return token


def _print(name: str, runs: dict[str, list[Run]]) -> None:
    line = []
    for server in ("gateway", "floor"):
        series = runs[server]
        rps, p50 = statistics.median(r.rps for r in series), statistics.median(r.p50_ms for r in series)
        line.append(
            f"  {name:<22} {server:<8} {rps:8.1f} req/s  p50 {p50:7.2f} ms"
            f"  p99 {statistics.median(r.p99_ms for r in series):7.2f} ms"
            f"  server {statistics.median(r.server_cpu_ms for r in series):6.2f} ms"
            f"  postgres {statistics.median(r.postgres_cpu_ms for r in series):5.2f} ms"
            f"  redis {statistics.median(r.redis_cpu_ms for r in series):5.2f} ms  non-2xx "
            f"{sum(r.non_2xx for r in series)}"
        )
    ratio = statistics.median(r.rps for r in runs["gateway"]) / statistics.median(
        r.rps for r in runs["floor"]
    )
    rounds = ", ".join(f"{g.rps / f.rps:.3f}" for g, f in zip(runs["gateway"], runs["floor"], strict=True))
    print("\n".join(line))
    print(f"  {name:<22} gateway / floor: {ratio:.3f} (rounds: {rounds})", flush=True)


async def main(
    people_count: int,
    rounds: int,
    seconds: int,
    connections: int,
    redis: str | None,
    *,
    profile: bool = False,
) -> None:
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install {'wrk' if tool == 'wrk' else 'util-linux'}")
    if profile and bench_profile.py_spy() is None:
        sys.exit("py-spy is not installed (it is in the dev dependencies: make install)")
    scratch = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    agreements_dir = scratch / "agreements"
    agreements_dir.mkdir()
    bench_agreements(agreements_dir)
    for name in ("dwp-worklessness",):  # bench_agreements relaxes the police client; the DWP one too
        path = agreements_dir / f"{name}.yaml"
        text = path.read_text(encoding="utf-8")
        access = text.index("client_authentication:")
        end = text.index("\n", text.index("token_binding:")) + 1
        text = (
            text[:access]
            + "client_authentication: [client_secret_basic]\ntoken_binding: bearer\n"
            + text[end:]
        )
        path.write_text(text.replace("people_per_day: 20000", "people_per_day: 10000000"), encoding="utf-8")
    load_agreements(agreements_dir)
    async with postgres_database() as url:
        prepared = await _prepare(url, people_count, agreements_dir)
        (scratch / "signing.jwk.json").unlink(missing_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_SIGNING_KEY_FILE": str(scratch / "signing.jwk.json"),
            "GATEWAY_REF_SECRET": SECRET.decode(),
            "GATEWAY_AGREEMENTS_DIR": str(agreements_dir),
            "GATEWAY_AUDIT_WITNESS": str(scratch / "witness"),
            "GATEWAY_TOKEN_TTL_SECONDS": "600",
            "GATEWAY_REQUESTS_PER_SECOND": "10000",
            "GATEWAY_REQUESTS_PER_MINUTE": "600000",
            "OTEL_SDK_DISABLED": "false",
            "PYTHONPATH": ROOT,  # this checkout's code, whichever the virtual environment was installed from
            **({"GATEWAY_REDIS_URL": redis} if redis else {}),
        }
        subprocess.run([GATEWAY, "keys", "generate"], env=env, check=True, capture_output=True)  # noqa: S603, ASYNC221
        floor_env = {
            "PATH": env["PATH"], "FLOOR_DATABASE_URL": url, "FLOOR_REF_SECRET": SECRET.decode(),
            "FLOOR_AGREEMENTS_DIR": str(agreements_dir), "FLOOR_TODAY": TODAY.isoformat(),
            "PYTHONPATH": ROOT,
        }  # fmt: skip
        gateway_port, floor_port = free_port(), free_port()
        gateway_base, floor_base = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{floor_port}"
        uvicorn = str(Path(sys.executable).parent / "uvicorn")
        with (
            _serving(
                [GATEWAY, "serve", "--port", str(gateway_port)], env, gateway_port, scratch / "gateway.log"
            ) as gateway_pid,
            _serving([uvicorn, "bench.floor:app", "--port", str(floor_port), "--no-access-log", "--log-level",
                      "warning"], floor_env, floor_port, scratch / "floor.log") as floor_pid,
        ):  # fmt: skip
            tokens = {a: _token(gateway_base, c) for a, c in prepared["clients"].items()}
            headers = {
                "police-prevention": {"Authorization": f"Bearer {tokens['police-prevention']}",
                                      "X-Acting-User": "bench-officer", "X-Case-Reference": "BENCH-1"},
                "dwp-worklessness": {"Authorization": f"Bearer {tokens['dwp-worklessness']}",
                                     "X-Acting-User": "bench-officer"},
            }  # fmt: skip
            top, keys = prepared["top"], prepared["keys"]
            workloads = {
                "police page (100)": ("police-prevention", _bodies("police", top, keys, 100)),
                "police lookup": ("police-prevention", _bodies("lookup", top, keys, 1)),
                "dwp page (100)": ("dwp-worklessness", _bodies("dwp", top, keys, 100)),
            }
            print(
                f"\n{people_count:,} people, wrk -t1 -c{connections} on CPU {LOAD_CPU}, each server one "
                f"worker on CPU {SERVER_CPU}, {rounds} rounds of {seconds} s, interleaved; "
                f"shared state in {'Redis' if redis else 'PostgreSQL'}; CPU in ms per request",
                flush=True,
            )
            for name, (agreement, bodies) in workloads.items():
                script = _lua(bodies, headers[agreement], scratch)
                runs: dict[str, list[Run]] = {"gateway": [], "floor": []}
                for _ in range(rounds):
                    answered, events = _metrics_requests(gateway_base), await _ledger_events(url)
                    runs["gateway"].append(
                        _measure(gateway_pid, f"{gateway_base}/graphql", script, seconds, connections)
                    )
                    await asyncio.sleep(1)  # the last commits land
                    answered = _metrics_requests(gateway_base) - answered
                    events = await _ledger_events(url) - events
                    assert events == answered, f"{name}: {events} events for {answered} answered requests"
                    runs["floor"].append(
                        _measure(floor_pid, f"{floor_base}/graphql", script, seconds, connections)
                    )
                _print(name, runs)
                # A ratio against errors is no ratio: every answer of both servers must be a 2xx.
                failed = {server: sum(r.non_2xx for r in series) for server, series in runs.items()}
                if any(failed.values()):
                    sys.exit(f"{name}: answers that were not 2xx ({failed}): the figures above do not count")
            print("  ledger: one event per answered request after every gateway run", flush=True)

            print("\nthe gateway's cost by page size (police page), CPU per request:")
            sizes, costs = [10, 50, 100], []
            for size in sizes:
                script = _lua(_bodies("police", top, keys, size), headers["police-prevention"], scratch)
                run = _measure(gateway_pid, f"{gateway_base}/graphql", script, seconds, connections)
                costs.append(run.server_cpu_ms)
                print(
                    f"  first: {size:<4} {run.rps:8.1f} req/s  server {run.server_cpu_ms:6.2f} ms", flush=True
                )
            slope, intercept = statistics.linear_regression(sizes, costs)
            print(f"  fitted: {intercept:.2f} ms fixed + {slope * 1000:.0f} microseconds per person")
            if profile:
                for name, (agreement, bodies) in workloads.items():
                    script = _lua(bodies, headers[agreement], scratch)
                    out = scratch / f"profile-{agreement}-{len(bodies)}.txt"
                    sampling = bench_profile.record(gateway_pid, seconds, out)
                    run_wrk(f"{gateway_base}/graphql", script, seconds, connections, cpu=LOAD_CPU)
                    sampling.wait(timeout=seconds + 60)
                    print(f"\nwhere the gateway's CPU goes, {name} (py-spy, {seconds} s):")
                    print(bench_profile.summary(out), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--redis",
        default=os.environ.get("GATEWAY_TEST_REDIS_URL", DEFAULT_REDIS_URL),
        help="the shared state's Redis, as production runs it (default: the test suite's)",
    )
    parser.add_argument(
        "--no-redis",
        action="store_true",
        help="keep the shared state (replay guard, daily people sets) in PostgreSQL, rate counters in memory",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then load each workload again while py-spy samples the gateway; print where its CPU goes",
    )
    options = parser.parse_args()
    redis = None if options.no_redis else options.redis
    asyncio.run(
        main(
            options.people,
            options.rounds,
            options.seconds,
            options.connections,
            redis,
            profile=options.profile,
        )
    )
