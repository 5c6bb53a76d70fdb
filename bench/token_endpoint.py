"""Whether the token endpoint's answer to a failed client authentication takes as long for a client
id that exists as for one that does not (it must not tell an attacker which ids exist).

    .venv/bin/python -m bench.token_endpoint [--requests 300]

In-process (httpx's ASGI transport) against a fresh SQLite file: the same code path as in
production, without a network's noise. Three kinds of request, interleaved so that each sees the
same machine: a registered client's id with an assertion signed by a key it never registered, an id
nobody registered, and (for scale) a registered client authenticating properly. Failures are spread
over 40 clients and as many addresses (X-Forwarded-For from a trusted proxy), staying under the
throttle's limits, so every failure is answered in full. Prints median and 90th-percentile latency
per kind and the ratio of the two failures' medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from pydantic import SecretStr

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import create_engine, upgrade
from gateway.keys import SigningKeys, generate_key
from gateway.oauth import add_client
from policies import load_agreements
from tests.support.identity import assertion, jwks, new_key

TODAY = date(2026, 11, 22)
SECRET = "benchmark ref secret, at least thirty-two bytes"  # noqa: S105 - synthetic
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENTS = 40


async def main(requests: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"
        engine = create_engine(url)
        await upgrade(engine)
        known = set(load_agreements())
        registered = []
        async with engine.begin() as conn:
            for _ in range(CLIENTS):
                key = new_key()
                made = await add_client(
                    conn, agreement_id="ons-evaluation", known_agreements=known, jwks=jwks(key)
                )
                registered.append((made.record.client_id, key))
        settings = Settings(
            database_url=url,
            ref_secret=SecretStr(SECRET),
            audit_witness="none",
            trusted_proxies="127.0.0.1/32",
            dpop_nonce=False,
        )
        app = create_app(
            settings, engine=engine, signing=SigningKeys.from_keys([generate_key()]), today=lambda: TODAY
        )
        endpoint = settings.issuer + "/oauth/token"
        stranger = new_key()
        timings: dict[str, list[float]] = {"registered id, wrong key": [], "unknown id": [], "success": []}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:

            async def send(kind: str, i: int) -> None:
                client_id, key = registered[i % CLIENTS]
                if kind == "unknown id":
                    client_id = f"ons-evaluation-{i:012x}"[:28]
                signer = key if kind == "success" else stranger
                header = {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
                form = {
                    "grant_type": "client_credentials",
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": assertion(client_id, signer, endpoint, header=header),
                }
                headers = {"X-Forwarded-For": f"198.51.100.{i % 200}"}
                if kind == "success":
                    from tests.support.partners import proof

                    headers["DPoP"] = proof(new_key(), "POST", endpoint)
                started = time.perf_counter()
                response = await http.post("/oauth/token", data=form, headers=headers)
                timings[kind].append((time.perf_counter() - started) * 1000)
                expected = 200 if kind == "success" else 401
                assert response.status_code == expected, (kind, response.status_code, response.text)

            for i in range(20):  # warm-up, not counted
                await send("success", i)
            for kind in timings:
                timings[kind].clear()
            for i in range(requests):
                for kind in ("registered id, wrong key", "unknown id", "success"):
                    await send(kind, i)
        await app.state.gateway.ledger.close()
        await engine.dispose()

    print(f"token endpoint, {requests} requests of each kind, interleaved, in-process, SQLite")
    print(f"  {'kind':<26} {'median ms':>10} {'p90 ms':>8}")
    medians = {}
    for kind, series in timings.items():
        medians[kind] = statistics.median(series)
        p90 = statistics.quantiles(series, n=10)[-1]
        print(f"  {kind:<26} {medians[kind]:10.2f} {p90:8.2f}")
    ratio = medians["registered id, wrong key"] / medians["unknown id"]
    print(f"  registered / unknown (medians): {ratio:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
