"""bench/profile.py: py-spy's collapsed stacks summed by the component of each sample's innermost frame."""

from __future__ import annotations

from pathlib import Path

from bench.profile import summary


def test_samples_are_counted_under_their_innermost_known_frame(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "serve (gateway/cli/serve.py:71);handle (gateway/graphql.py:201);hit (redis/asyncio/client.py:5) 30\n"
        "serve (gateway/cli/serve.py:71);rows (resolvers/people.py:300);"
        "_do_execute (asyncpg/connection.py:2) 50\n"
        "serve (gateway/cli/serve.py:71);handle (gateway/graphql.py:201) 5\n"
        "run (asyncio/runners.py:118);<native> (libc.so:0) 15\n"
        "not a sample line\n",
        encoding="utf-8",
    )
    lines = summary(raw).splitlines()
    shares = {line.split("%", 1)[1].strip(): float(line.split("%")[0]) for line in lines[:4]}
    assert shares == {
        "asyncpg (driver)": 50.0,
        "Redis client": 30.0,
        "asyncio and uvloop": 15.0,
        "endpoint and routes (gateway)": 5.0,
    }
    assert "(100 samples)" in lines[4]
    assert lines[5].endswith("_do_execute (asyncpg/connection.py)")
