"""Who may sign in to the security console: the security-audit agreement's `console:` block."""

from __future__ import annotations

from typing import Any

import pytest

from policies import AgreementFileError, load_agreements, parse_agreement
from tests.policies.test_ledger_agreements import LEDGER

CONSOLE = """\
console:
  claim: groups
  any_of: [information-security, dpo-office]
  reader_claim: email
"""


def test_the_shipped_agreement_admits_the_information_security_team_only() -> None:
    rules = load_agreements()["security-audit"].console
    assert rules is not None
    assert rules.admits({"groups": ["housing", "information-security"], "email": "a@council.test.invalid"})
    assert rules.admits({"groups": "information-security", "email": "a@council.test.invalid"})
    assert not rules.admits({"groups": ["housing"], "email": "a@council.test.invalid"})
    assert not rules.admits({"groups": ["Information-Security"], "email": "a@council.test.invalid"})
    assert not rules.admits({"email": "a@council.test.invalid"})
    assert not rules.admits({"groups": {"information-security": True}, "email": "a@council.test.invalid"})


@pytest.mark.parametrize(
    "claims",
    [
        {"groups": ["information-security"]},  # no one to record
        {"groups": ["information-security"], "email": ""},
        {"groups": ["information-security"], "email": 42},
        {"groups": ["information-security"], "email": "a\nb@council.test.invalid"},
        {"groups": ["information-security"], "email": "x" * 201},
        {"groups": ["information-security"], "email": "a@council.test.invalid", "email_verified": False},
    ],
)
def test_a_reader_the_ledger_could_not_name_is_not_admitted(claims: dict[str, Any]) -> None:
    rules = parse_agreement(LEDGER + CONSOLE, source="ledger-test.yaml").console
    assert rules is not None and not rules.admits(claims)


def test_the_reader_is_named_by_the_reader_claim() -> None:
    rules = parse_agreement(LEDGER + CONSOLE, source="ledger-test.yaml").console
    assert rules is not None
    assert rules.reader({"email": " dpo@council.test.invalid ", "sub": "123"}) == "dpo@council.test.invalid"
    assert rules.admits({"groups": ["dpo-office"], "email": "dpo@council.test.invalid"})


GROUPS = "console:\n  claim: groups\n"
READER = "  reader_claim: email\n"


@pytest.mark.parametrize(
    ("block", "key", "reason"),
    [
        (GROUPS + "  any_of: [x]\n", "console.reader_claim", "required"),
        (GROUPS + "  any_of: []\n" + READER, "console.any_of", "at least one"),
        (GROUPS + "  any_of: [x, x]\n" + READER, "console.any_of[1]", "twice"),
        ("console:\n  claim: 'no spaces'\n  any_of: [x]\n" + READER, "console.claim", "claim name"),
        (GROUPS + "  any_of: [x]\n" + READER + "  role: admin\n", "console.role", "unknown"),
    ],
)
def test_a_bad_console_block_names_its_key(block: str, key: str, reason: str) -> None:
    with pytest.raises(AgreementFileError) as refused:
        parse_agreement(LEDGER + block, source="ledger-test.yaml")
    assert refused.value.key == key
    assert reason in str(refused.value)


def test_a_person_agreement_cannot_open_the_console(repo_root: Any) -> None:
    police = (repo_root / "policies/agreements/police-prevention.yaml").read_text(encoding="utf-8")
    with pytest.raises(AgreementFileError) as refused:
        parse_agreement(police + CONSOLE, source="police-prevention.yaml")
    assert refused.value.key == "console" and "access ledger only" in str(refused.value)
