"""Parsing one agreement: every bad document names file, line, key and reason; edge cases load.

Each bad document is one of the valid fixtures in `fixtures/` with a single edit, so a row fails for
the reason it names and no other. Line numbers are those of the edited fixture (1-based).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from operator import attrgetter
from pathlib import Path

import pytest

from policies import AgreementFileError, parse_agreement
from policies.agreements import MAX_PAGE_SIZE_CEILING

FIXTURES = Path(__file__).parent / "fixtures"
SOURCE = "bad.yaml"


def derive(base: str, old: str, new: str) -> str:
    """The fixture `base` with the one occurrence of `old` replaced by `new`."""
    text = (FIXTURES / f"{base}.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {base}.yaml"
    return text.replace(old, new)


@dataclass(frozen=True)
class Bad:
    base: str | None  # None: `new` is the whole document
    old: str
    new: str
    line: int | None
    key: str
    reason: str  # a fragment of the expected reason

    def text(self) -> str:
        return self.new if self.base is None else derive(self.base, self.old, self.new)


VERIFIED_OFFICERS = (
    (FIXTURES / "base-agreement.yaml").read_text(encoding="utf-8").split("acting_user: verified", 1)
)
VERIFIED_OFFICERS = "acting_user: verified" + VERIFIED_OFFICERS[1]


def bad(
    old: str, new: str, line: int, key: str, reason: str, *, id: str, base: str = "base-agreement"
) -> object:
    return pytest.param(Bad(base, old, new, line, key, reason), id=id)


def whole(text: str, line: int, key: str, reason: str, *, id: str) -> object:
    return pytest.param(Bad(None, "", text, line, key, reason), id=id)


BAD_DOCUMENTS = [
    # Keys
    bad("honours_objection:", "honours_objections:", 17, "honours_objections", "unknown key",
        id="unknown-top-key"),
    bad("  lookup: single_match", "  people_per_week: 5000", 23, "limits.people_per_week", "unknown key",
        id="unknown-limits-key"),
    bad("  until: 2027", "  to: 2027", 11, "effective.to", "unknown key", id="unknown-effective-key"),
    bad("{max_page_size: 500}", "{max_page_size: 500, page_size: 50}", 14, "limits.page_size", "unknown key",
        base="base-listing", id="unknown-key-in-flow-mapping"),
    bad("review_due: 2027-01-31\n", "review_due: 2027-01-31\nreview_due: 2027-02-28\n", 13, "review_due",
        "duplicate key", id="duplicate-top-key"),
    bad("  from: 2025-04-01\n", "  from: 2025-04-01\n  from: 2025-05-01\n", 11, "effective.from",
        "duplicate key", id="duplicate-nested-key"),
    bad("partner: Test Partner\n", "", 2, "partner", "missing required key(s): partner",
        id="missing-top-key"),
    bad("  until: 2027-03-31\n", "", 10, "effective.until", "missing required key(s): until",
        id="missing-nested-key"),
    # Shapes
    bad("{from: 2025-04-01, until: 2027-03-31}", "2025-04-01", 7, "effective", "expected a mapping",
        base="base-listing", id="effective-not-a-mapping"),
    bad("fields: [address, uprn]", "fields: address", 10, "fields", "expected a list", base="base-listing",
        id="fields-not-a-list"),
    bad("partner: Test Partner", "partner: 2025", 4, "partner", "expected text", id="partner-not-text"),
    bad("purpose: >-\n  Exercise every key the loader knows,\n  over two lines.\n", "purpose: ''\n", 5,
        "purpose", "must not be empty", id="empty-purpose"),
    # Fields and match
    bad("postcode, address", "nickname, postcode, address", 14, "fields[2]", "unknown field 'nickname'",
        id="unknown-field"),
    bad("programmeStatus]", "programmeStatus, dateOfBirth]", 14, "fields[5]", "'dateOfBirth' is listed twice",
        id="field-listed-twice"),
    bad("fields: [familyName, dateOfBirth, postcode, address, programmeStatus]", "fields: []", 14, "fields",
        "at least one field", id="no-fields"),
    bad("match: [familyName, dateOfBirth]", "match: [familyName, givenName]", 15, "match[1]",
        "'givenName' is not among the agreement's fields", id="match-field-not-in-fields"),
    bad("match: [familyName, dateOfBirth]", "match: [familyName, address]", 15, "match[1]",
        "unknown match field 'address'", id="match-field-not-matchable"),
    bad("match: [familyName, dateOfBirth]", "match: [familyName, familyName]", 15, "match[1]",
        "'familyName' is listed twice", id="match-field-listed-twice"),
    # Population
    bad("population: supporting-families-cohort", "population: everyone", 13, "population",
        "unknown population", id="unknown-population"),
    # Dates
    bad("  from: 2025-04-01", "  from: 2025-4-1", 10, "effective.from", "expected a date written YYYY-MM-DD",
        id="date-not-zero-padded"),
    bad("  until: 2027-03-31", "  until: 2027-02-30", 11, "effective.until", "not a real date",
        id="impossible-date"),
    bad("review_due: 2027-01-31", "review_due: 31/01/2027", 12, "review_due", "YYYY-MM-DD",
        id="date-in-uk-order"),
    bad("  until: 2027-03-31", "  until: 2025-03-31", 11, "effective.until", "must not be before 'from'",
        id="until-before-from"),
    bad("review_due: 2027-01-31", "review_due: 2025-03-31", 12, "review_due",
        "must not be before effective.from", id="review-due-before-from"),
    # Booleans, numbers, choices
    bad("listing: true", "listing: yes", 16, "listing", "expected true or false", id="yes-for-true"),
    bad("honours_objection: false", "honours_objection: no", 17, "honours_objection",
        "expected true or false", id="no-for-false"),
    bad("introspection: true", "introspection: True", 24, "introspection", "expected true or false",
        id="capitalised-true"),
    bad("version: 2", "version: 0", 3, "version", "must be between 1 and 1000000", id="version-zero"),
    bad("version: 2", "version: two", 3, "version", "expected a whole number", id="version-not-a-number"),
    bad("version: 2", "version: 2.1", 3, "version", "expected a whole number", id="version-decimal"),
    bad("protected_address: withhold", "protected_address: disclose", 18, "protected_address",
        "expected one of: withhold, exclude", id="protected-address-disclose"),
    bad("  lookup: single_match", "  lookup: many", 23, "limits.lookup", "expected one of: single_match",
        id="unknown-lookup-mode"),
    # Limits against listing and match
    bad("  max_page_size: 100", f"  max_page_size: {MAX_PAGE_SIZE_CEILING + 1}", 22, "limits.max_page_size",
        f"must be between 1 and {MAX_PAGE_SIZE_CEILING}", id="page-size-above-ceiling"),
    bad("  max_page_size: 100", "  max_page_size: 0", 22, "limits.max_page_size", "must be between 1",
        id="page-size-zero"),
    bad("  max_page_size: 100\n", "", 16, "listing", "listing needs limits.max_page_size",
        id="listing-without-page-size"),
    bad("limits: {max_page_size: 500}", "limits: {}", 11, "listing", "listing needs limits.max_page_size",
        base="base-listing", id="listing-with-empty-limits"),
    bad("  lookup: single_match\n", "", 15, "match", "match needs limits.lookup", id="match-without-lookup"),
    bad("match: [familyName, dateOfBirth]\n", "", 21, "limits", "limits.lookup needs match fields",
        id="lookup-without-match"),
    bad("listing: true", "listing: false", 11, "listing", "could reach no one", base="base-listing",
        id="no-listing-and-no-match"),
    # Break-glass and requires
    bad("break_glass: true", "break_glass: false", 18, "protected_address",
        "'withhold' would show which people have a protected address", id="withhold-without-break-glass"),
    bad("break_glass: true\n", "", 18, "protected_address", "use 'exclude' (withhold only with break_glass)",
        id="withhold-with-break-glass-left-out"),
    bad("protected_address: withhold", "protected_address: exclude", 19, "break_glass",
        "only where protected_address is 'withhold'", id="break-glass-with-exclude"),
    bad("[acting_user, case_reference]", "[acting_user]", 19, "break_glass",
        "requires both acting_user and case_reference", id="break-glass-without-case-reference"),
    bad("requires: [acting_user, case_reference]\n", "", 24, "acting_user",
        "a verified acting user must also be in requires", id="break-glass-without-requires"),
    bad(VERIFIED_OFFICERS, "", 19, "break_glass",
        "break-glass needs a verified acting user", id="break-glass-with-an-asserted-acting-user"),
    bad("fields: [familyName, dateOfBirth, postcode, address, programmeStatus]",
        "fields: [familyName, dateOfBirth, programmeStatus]", 19, "break_glass",
        "pointless without a location or contact field", id="break-glass-without-location-field"),
    bad("[acting_user, case_reference]", "[acting_user, case_number]", 20, "requires[1]",
        "expected one of: acting_user, case_reference", id="unknown-requires-entry"),
    bad("[acting_user, case_reference]", "[acting_user, case_reference, acting_user]", 20, "requires[2]",
        "listed twice", id="duplicate-requires-entry"),
    # Lawful basis and id
    bad("lawful_basis: [UK GDPR Art 6(1)(e), Test Act 2000 s1]", "lawful_basis: []", 8, "lawful_basis",
        "at least one lawful basis is required", id="empty-lawful-basis"),
    bad("Test Act 2000 s1]", "'  ']", 8, "lawful_basis[1]", "must not be empty",
        id="blank-lawful-basis-entry"),
    bad("id: base-agreement", "id: Base-Agreement", 2, "id", "lower-case words", id="id-upper-case"),
    bad("id: base-agreement", "id: base agreement", 2, "id", "lower-case words", id="id-with-space"),
    bad("id: base-agreement", "id: base--agreement", 2, "id", "lower-case words", id="id-double-hyphen"),
    bad("id: base-agreement", "id: " + "a" * 65, 2, "id", "at most 64 characters", id="id-too-long"),
    # The document as a whole
    bad("partner: Test Partner", "partner: Test: Partner", 4, "", "not valid YAML", id="invalid-yaml"),
    bad("  until: 2027-03-31", "\tuntil: 2027-03-31", 11, "", "not valid YAML", id="tab-indentation"),
    whole("", 1, "", "the file is empty", id="empty-file"),
    whole("# nothing but a comment\n", 1, "", "the file is empty", id="comment-only-file"),
    whole("- id: base-agreement\n", 1, "", "expected a mapping", id="list-document"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_bad_document_names_file_line_key_and_reason(case: Bad) -> None:
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(case.text(), source=SOURCE)
    error = caught.value
    assert (error.file, error.line, error.key) == (SOURCE, case.line, case.key)
    assert case.reason in error.reason
    assert str(error) == f"{SOURCE}:{case.line}: {case.key or '(file)'}: {error.reason}"


def test_error_reads_file_line_key_reason() -> None:
    text = derive("base-agreement", "  until: 2027-03-31", "  until: 2025-03-31")
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(text, source="base-agreement.yaml")
    assert str(caught.value) == "base-agreement.yaml:11: effective.until: must not be before 'from'"


def test_error_without_key_reads_file_placeholder() -> None:
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement("", source="empty.yaml")
    assert str(caught.value) == "empty.yaml:1: (file): the file is empty"


@pytest.mark.parametrize(
    ("base", "old", "new", "attribute", "expected"),
    [
        pytest.param("base-agreement", "  max_page_size: 100", f"  max_page_size: {MAX_PAGE_SIZE_CEILING}",
                     "limits.max_page_size", MAX_PAGE_SIZE_CEILING, id="page-size-at-ceiling"),
        pytest.param("base-agreement", "  until: 2027-03-31", "  until: 2025-04-01", "effective.until",
                     date(2025, 4, 1), id="until-equals-from"),
        pytest.param("base-agreement", "review_due: 2027-01-31", "review_due: 2025-04-01", "review_due",
                     date(2025, 4, 1), id="review-due-equals-from"),
        pytest.param("base-agreement", "protected_address: withhold\nbreak_glass: true",
                     "protected_address: exclude\nbreak_glass: false", "break_glass", False,
                     id="break-glass-false-with-exclude"),
        pytest.param("base-agreement", "version: 2", "version: 1000000", "version", 1_000_000,
                     id="version-at-maximum"),
        pytest.param("base-listing", "fields: [address, uprn]", "fields:\n  - address\n  - uprn", "fields",
                     ("address", "uprn"), id="fields-as-block-list"),
    ],
)  # fmt: skip
def test_edge_document_is_accepted(base: str, old: str, new: str, attribute: str, expected: object) -> None:
    agreement = parse_agreement(derive(base, old, new), source=f"{base}.yaml")
    assert attrgetter(attribute)(agreement) == expected


def test_base_fixture_reads_exactly() -> None:
    agreement = parse_agreement((FIXTURES / "base-agreement.yaml").read_text(), source="base-agreement.yaml")
    assert agreement.label == "base-agreement@2"
    assert agreement.purpose == "Exercise every key the loader knows, over two lines."
    assert agreement.lawful_basis == ("UK GDPR Art 6(1)(e)", "Test Act 2000 s1")
    assert (agreement.effective.start, agreement.effective.until) == (date(2025, 4, 1), date(2027, 3, 31))
    assert agreement.review_due == date(2027, 1, 31)
    assert agreement.fields == ("familyName", "dateOfBirth", "postcode", "address", "programmeStatus")
    assert agreement.match == ("familyName", "dateOfBirth")
    assert agreement.requires == frozenset({"acting_user", "case_reference"})
    assert (agreement.limits.max_page_size, agreement.limits.lookup) == (100, "single_match")
    assert (agreement.listing, agreement.break_glass, agreement.introspection) == (True, True, True)
    assert (agreement.honours_objection, agreement.protected_address) == (False, "withhold")
    assert agreement.source == "base-agreement.yaml"


def test_all_records_population_cannot_be_listed() -> None:
    text = derive("base-agreement", "population: supporting-families-cohort", "population: all-records")
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(text, source=SOURCE)
    assert caught.value.key in {"population", "listing"}
    assert "listing" in caught.value.reason
