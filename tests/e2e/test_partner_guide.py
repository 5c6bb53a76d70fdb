"""docs/partners.md, run as a partner's engineer would run it: every block, in order, exactly as written
but for the demo's port, against a running demo.

The guide's partner uses authlib's OAuth client with private_key_jwt and DPoP, exchanges an officer's
token from the police's identity provider (the demo's stand-in), queries, and revokes its token; the
ledger must then name that client and the verified officer.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Demo

GUIDE_BASE = "http://127.0.0.1:8000"
_BLOCK = re.compile(r"(?:<!-- (file: [\w.-]+|run) -->\n)?```(\w*)\n(.*?)```", re.DOTALL)

pytestmark = pytest.mark.e2e


def guide_blocks(repo_root: Path) -> list[tuple[str, str]]:
    """(`file: NAME` or `run`, text) for every fenced block of the guide; a block marked neither fails."""
    blocks = []
    for marker, language, text in _BLOCK.findall((repo_root / "docs" / "partners.md").read_text("utf-8")):
        assert marker, f"an unmarked {language or 'text'} block in docs/partners.md: mark it file: or run"
        assert (marker == "run") == (language == "sh"), f"{marker} block in {language}"
        blocks.append((marker, text))
    return blocks


def test_the_partner_guide_runs_as_written(running_demo: Demo, repo_root: Path) -> None:
    blocks = guide_blocks(repo_root)
    assert [marker for marker, _ in blocks if marker != "run"] == [
        "file: make_keys.py",
        "file: first-three.graphql",
        "file: partner.py",
    ]
    outputs = []
    for marker, text in blocks:
        text = text.replace(GUIDE_BASE, running_demo.base)
        if marker.startswith("file: "):
            (running_demo.directory / marker.removeprefix("file: ")).write_text(text, encoding="utf-8")
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", text], cwd=running_demo.directory, env=running_demo.env(),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, (text, done.stdout, done.stderr)
        assert done.stderr == "", (text, done.stderr)  # no warnings, no tracebacks
        outputs.append(done.stdout)
    made, registered, trusted, officer, ran, searched = outputs

    keys = running_demo.directory / "partner-keys"
    assert "send partner-keys/public.jwks.json to the council" in made
    for name in ("assertion", "dpop"):
        assert stat.S_IMODE((keys / f"{name}.private.jwk.json").stat().st_mode) == 0o600
    client = json.loads(registered)
    assert (client["agreement"], client["authentication"]) == ("police-prevention", "private_key_jwt")
    assert "client_secret" not in client
    document = (running_demo.directory / "first-three.graphql").read_bytes()
    assert trusted.split()[:2] == [f"sha256:{hashlib.sha256(document).hexdigest()}", "registered"]
    assert officer == "" and (running_demo.directory / "officer.jwt").read_text().count(".") == 2  # a JWT

    answer, _, last = ran.rpartition("after revocation:")
    people = json.loads(answer)["data"]["people"]["edges"]
    assert len(people) == 3 and all(edge["node"]["ref"].startswith("per_") for edge in people)
    assert last.strip() == "401 UNAUTHENTICATED"

    [query] = json.loads(searched)
    assert (query["client_id"], query["endpoint"], query["outcome"]) == (
        client["client_id"],
        "graphql",
        "allowed",
    )
    assert (query["acting_user"], query["people_count"], query["http_status"]) == ("pc-4471", 3, 200)
    assert query["officer_issuer"], "the officer is recorded as verified, with the issuer that verified it"
    assert query["fields_disclosed"] == ["ref", "givenName", "familyName"]
    assert query["document_sha256"] == hashlib.sha256(document).hexdigest()
    assert query["operation_name"] == "FirstThree"

    # Everything the client did, oldest first: the nonce it was asked for, the exchange naming the
    # verified officer, the query, the revocation, and the revoked token refused.
    gateway = str(running_demo.directory / ".venv" / "bin" / "gateway")
    everything = subprocess.run(
        [gateway, "audit", "search", "--client", client["client_id"], "--json"],
        cwd=running_demo.directory, env=running_demo.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert everything.returncode == 0, everything.stderr
    events = list(reversed(json.loads(everything.stdout)))
    assert [(e["endpoint"], e["http_status"], e["error_code"], e["acting_user"]) for e in events] == [
        ("token", 400, "use_dpop_nonce", None),
        ("token", 200, None, "pc-4471"),
        ("graphql", 200, None, "pc-4471"),
        ("revoke", 200, None, None),
        ("graphql", 401, "UNAUTHENTICATED", "pc-4471"),  # the revoked token still names its officer
    ]
    assert {e["officer_issuer"] for e in events} == {None, query["officer_issuer"]}
    assert (
        events[2]["token_jti"] == events[1]["token_jti"] == events[3]["token_jti"] == events[4]["token_jti"]
    )
