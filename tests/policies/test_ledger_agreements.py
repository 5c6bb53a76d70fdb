"""Agreements over the access ledger (population access-ledger): a different vocabulary, no person keys."""

from __future__ import annotations

from datetime import date

import pytest

from policies import (
    AGREEMENTS_DIR,
    AgreementFileError,
    PurposeContext,
    evaluate,
    load_agreements,
    parse_agreement,
)

LEDGER = """\
id: ledger-test
version: 1
partner: Security team
purpose: Investigate access.
lawful_basis: [UK GDPR Art 5(2)]
effective: {from: 2025-04-01, until: 2027-03-31}
review_due: 2027-01-31
population: access-ledger
fields: [auditEvents, disclosures]
listing: true
requires: [acting_user, case_reference]
limits: {max_page_size: 200}
introspection: true
"""


def test_the_shipped_security_audit_agreement_is_a_ledger_agreement() -> None:
    agreement = load_agreements()["security-audit"]
    assert agreement.is_ledger
    assert agreement.fields == ("auditEvents", "disclosures", "breakGlass", "rightsRequests", "eligibility")
    assert agreement.requires == {"acting_user", "case_reference"}
    assert not load_agreements()["police-prevention"].is_ledger


def test_a_minimal_ledger_agreement_loads() -> None:
    agreement = parse_agreement(LEDGER, source="ledger-test.yaml")
    assert agreement.is_ledger and agreement.listing and agreement.limits.max_page_size == 200


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "reason"),
    [
        ("introspection: true\n", "introspection: true\nhonours_objection: false\n", 14,
         "honours_objection", "does not apply to the access ledger"),
        ("introspection: true\n", "introspection: true\nprotected_address: withhold\n", 14,
         "protected_address", "does not apply to the access ledger"),
        ("introspection: true\n", "introspection: true\nmatch: [familyName]\n", 14, "match",
         "does not apply to the access ledger"),
        ("introspection: true\n", "introspection: true\nbreak_glass: true\n", 14, "break_glass",
         "does not apply to the access ledger"),
        ("[auditEvents, disclosures]", "[auditEvents, givenName]", 9, "fields[1]",
         "unknown ledger field 'givenName'"),
        ("[auditEvents, disclosures]", "[disclosures]", 10, "listing", "exactly when auditEvents"),
        ("{max_page_size: 200}", "{max_page_size: 200, lookup: single_match}", 12, "limits",
         "lookup does not apply"),
        ("limits: {max_page_size: 200}\n", "", 10, "listing", "needs limits.max_page_size"),
    ],
)  # fmt: skip
def test_person_vocabulary_is_refused_for_the_ledger(
    old: str, new: str, line: int, key: str, reason: str
) -> None:
    assert LEDGER.count(old) == 1
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(LEDGER.replace(old, new), source="ledger-test.yaml")
    assert (caught.value.line, caught.value.key) == (line, key)
    assert reason in caught.value.reason


def test_ledger_fields_are_not_person_fields() -> None:
    source = (AGREEMENTS_DIR / "police-prevention.yaml").read_text(encoding="utf-8")
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(
            source.replace("fields: [givenName,", "fields: [auditEvents, givenName,"), source="p.yaml"
        )
    assert "unknown field 'auditEvents'" in caught.value.reason


def test_a_person_population_still_needs_its_person_keys() -> None:
    source = (AGREEMENTS_DIR / "police-prevention.yaml").read_text(encoding="utf-8")
    without = "\n".join(line for line in source.splitlines() if not line.startswith("protected_address"))
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(without, source="p.yaml")
    assert caught.value.key == "population"
    assert "needs protected_address" in caught.value.reason


def test_reading_the_ledger_needs_who_and_why() -> None:
    agreement = load_agreements()["security-audit"]
    refused = evaluate(agreement, PurposeContext(acting_user="analyst-7"), today=date(2026, 11, 22))
    assert not refused.allowed and refused.rule == "requires.case_reference"
    allowed = evaluate(agreement, PurposeContext("analyst-7", "SEC-2026-11"), today=date(2026, 11, 22))
    assert allowed.allowed
    assert allowed.fields == ("auditEvents", "disclosures", "breakGlass", "rightsRequests", "eligibility")
    assert allowed.conditionally_withheld == ()
