"""A partner's batch end to end: the demo under uvicorn, the DWP's client file, real keys, tokens and DPoP
proofs, `gateway partner batch` uploading an NDJSON file and following the job to its end, as a partner's
engineer would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Demo

pytestmark = pytest.mark.e2e
DWP = "var/demo-clients/dwp-worklessness.json"
CASE = ("--case-reference", "BATCH-2026-0001")


def _gateway(demo: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    gateway = str(Path(sys.executable).parent / "gateway")
    return subprocess.run(
        [gateway, *args], cwd=demo.directory, env=demo.env(), capture_output=True, text=True, timeout=120
    )


def test_the_dwp_uploads_a_batch_and_follows_it_to_the_end(running_demo: Demo, repo_root: Path) -> None:
    page = repo_root / "gateway" / "cli" / "demo_documents" / "dwp-worklessness" / "page.graphql"
    listed = _gateway(
        running_demo, "partner", "query", "--client-file", DWP, "--query-file", str(page),
        "--variables", '{"first": 3}', "--acting-user", "dwp-analyst-7", *CASE,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    refs = [edge["node"]["ref"] for edge in json.loads(listed.stdout)["data"]["people"]["edges"]]
    assert len(refs) == 3
    rows = [
        *({"report": "reportBenefitStatus", "ref": ref, "outOfWorkBenefits": True, "asOf": "2026-10-01"}
          for ref in refs),
        {"report": "reportBenefitStatus", "ref": "per_not-yours", "outOfWorkBenefits": True,
         "asOf": "2026-10-01"},
        {"report": "reportTwoYearOldOfferEligible", "givenName": "Ada", "familyName": "Endtoend",
         "dateOfBirth": "2024-06-15", "addressLine1": "7 Offer Street", "town": "London",
         "postcode": "W2 1AA"},
    ]  # fmt: skip
    batch = running_demo.directory / "benefits.ndjson"
    batch.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    sent = _gateway(
        running_demo, "partner", "batch", "--client-file", DWP, str(batch), "--results",
        "--acting-user", "dwp-analyst-7", *CASE,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    job, end = json.JSONDecoder().raw_decode(sent.stdout)  # the job, then each row's result (NDJSON)
    assert {k: job[k] for k in ("state", "rows", "processed", "accepted", "rejected", "percent")} == {
        "state": "done", "rows": 5, "processed": 5, "accepted": 4, "rejected": 1, "percent": 100,
    }  # fmt: skip
    results = [json.loads(line) for line in sent.stdout[end:].strip().splitlines()]
    assert [(r["row"], r["status"], r.get("code")) for r in results] == [
        (1, "accepted", None), (2, "accepted", None), (3, "accepted", None),
        (4, "rejected", "BAD_USER_INPUT"), (5, "accepted", None),
    ]  # fmt: skip
    # The same file again is the same job (its key is its content's): nothing is reported twice.
    again = _gateway(running_demo, "partner", "batch", "--client-file", DWP, str(batch), "--acting-user",
                     "dwp-analyst-7", *CASE)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == job["id"]
    # One batch event in the ledger, naming the three people reported on, under the upload's case.
    searched = _gateway(running_demo, "audit", "search", "--case", CASE[1], "--json")
    assert searched.returncode == 0, searched.stderr
    events = [e for e in json.loads(searched.stdout) if e["endpoint"] == "batch"]
    assert [(e["id"], e["people_count"], e["acting_user"]) for e in events] == [
        (job["eventId"], 3, "dwp-analyst-7")
    ]
