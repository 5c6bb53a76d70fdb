"""How long `gateway seed` takes for a population, on SQLite and PostgreSQL, side by side.

    .venv/bin/python -m bench.seed_population [--people 100000] [--runs 3]

Each run seeds a fresh database (a new SQLite file; a new PostgreSQL database created on the server
named by GATEWAY_TEST_POSTGRES_URL and dropped afterwards) in one transaction, as the CLI does.
Prints the median wall time, people per second, and the peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from gateway.db import create_engine, upgrade
from resolvers import seed_population
from tests.support.databases import postgres_database, sqlite_database


async def _seed_once(url: str, people: int) -> float:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        started = time.perf_counter()
        async with engine.begin() as conn:
            await seed_population(conn, people_count=people, seed=1, today=date(2026, 11, 22))
        return time.perf_counter() - started
    finally:
        await engine.dispose()


async def _measure(backend: str, people: int) -> float:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            async with sqlite_database(Path(directory)) as url:
                return await _seed_once(url, people)
    async with postgres_database() as url:
        return await _seed_once(url, people)


async def main(people: int, runs: int) -> None:
    timings: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for _ in range(runs):
        for backend in timings:  # interleaved, so both see the same machine load
            timings[backend].append(await _measure(backend, people))
    print(f"seeding {people:,} people, {runs} runs each, interleaved")
    for backend, values in timings.items():
        median = statistics.median(values)
        print(
            f"  {backend:<10} median {median:6.2f} s   {people / median:>9,.0f} people/s   "
            f"runs: {', '.join(f'{v:.2f}' for v in values)}"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak resident memory of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.people, arguments.runs))
    sys.exit(0)
