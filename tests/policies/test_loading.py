"""Loading agreement directories: the shipped agreements, fixture directories, file-level errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import AGREEMENTS_DIR, AgreementFileError, load_agreements, parse_agreement

FIXTURES = Path(__file__).parent / "fixtures"
SHIPPED_IDS = {
    "dwp-worklessness",
    "family-hub-outreach",
    "mash-safeguarding",
    "ons-evaluation",
    "police-prevention",
    "public-health-planning",
    "school-attendance",
    "security-audit",
    "youth-justice",
}


def _listing() -> str:
    return (FIXTURES / "base-listing.yaml").read_text(encoding="utf-8")


def test_shipped_agreements_all_load() -> None:
    agreements = load_agreements()
    assert set(agreements) == SHIPPED_IDS
    assert {path.stem for path in AGREEMENTS_DIR.glob("*.yaml")} == SHIPPED_IDS
    assert all(agreement.source == f"{agreement.id}.yaml" for agreement in agreements.values())


@pytest.mark.parametrize(
    ("agreement_id", "population", "fields", "match", "listing", "honours_objection", "protected", "glass"),
    [
        pytest.param("police-prevention", "supporting-families-cohort",
                     ("givenName", "familyName", "dateOfBirth", "postcode"), ("familyName", "dateOfBirth"),
                     True, False, "exclude", False, id="police-prevention"),
        pytest.param("dwp-worklessness", "eligibility-criterion-met", ("address", "uprn"), (),
                     True, False, "exclude", False, id="dwp-worklessness"),
        pytest.param("ons-evaluation", "assessed",
                     ("givenName", "familyName", "dateOfBirth", "assessmentOutcome", "familyRef"), (),
                     True, False, "exclude", False, id="ons-evaluation"),
        pytest.param("family-hub-outreach", "eligible-without-coordinated-support",
                     ("givenName", "familyName", "phone", "email", "address"), (),
                     True, True, "exclude", False, id="family-hub-outreach"),
        pytest.param("youth-justice", "children-10-to-17",
                     ("givenName", "familyName", "dateOfBirth", "address", "school", "programmeStatus"),
                     ("familyName", "dateOfBirth"), False, False, "exclude", False, id="youth-justice"),
        pytest.param("mash-safeguarding", "all-records",
                     ("givenName", "familyName", "dateOfBirth", "address", "uprn", "phone", "email", "school",
                      "programmeStatus", "assessmentOutcome", "familyRef", "members"),
                     ("givenName", "familyName", "dateOfBirth"), False, False, "withhold", True,
                     id="mash-safeguarding"),
        pytest.param("public-health-planning", "assessed", ("postcodeDistrict", "ageBand", "programmeStatus"),
                     (), True, True, "exclude", False, id="public-health-planning"),
        pytest.param("school-attendance", "school-age-children", ("familyName", "dateOfBirth"),
                     ("familyName", "dateOfBirth"), False, False, "exclude", False, id="school-attendance"),
    ],
)  # fmt: skip
def test_shipped_agreement_shares_what_design_table_says(
    agreement_id: str,
    population: str,
    fields: tuple[str, ...],
    match: tuple[str, ...],
    listing: bool,
    honours_objection: bool,
    protected: str,
    glass: bool,
) -> None:
    agreement = load_agreements()[agreement_id]
    assert (agreement.population, agreement.fields, agreement.match) == (population, fields, match)
    assert (agreement.listing, agreement.honours_objection) == (listing, honours_objection)
    assert (agreement.protected_address, agreement.break_glass) == (protected, glass)


def test_fixture_directory_loads() -> None:
    assert set(load_agreements(FIXTURES)) == {"base-agreement", "base-listing"}


def test_id_must_match_file_name(tmp_path: Path) -> None:
    (tmp_path / "other-name.yaml").write_text(_listing())
    with pytest.raises(AgreementFileError) as caught:
        load_agreements(tmp_path)
    error = caught.value
    assert (error.file, error.line, error.key) == ("other-name.yaml", 2, "id")
    assert str(error) == "other-name.yaml:2: id: must match the file name ('other-name')"


def test_a_yml_file_is_refused_rather_than_silently_ignored(tmp_path: Path) -> None:
    (tmp_path / "base-listing.yaml").write_text(_listing())
    (tmp_path / "new-partner.yml").write_text(_listing())
    with pytest.raises(AgreementFileError) as caught:
        load_agreements(tmp_path)
    assert str(caught.value) == "new-partner.yml: (file): agreement files must end in .yaml"


def test_bad_file_in_directory_is_named_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "base-listing.yaml").write_text(_listing())
    broken = _listing().replace("id: base-listing\n", "id: broken\n").replace("version: 1\n", "version: 0\n")
    (tmp_path / "broken.yaml").write_text(broken)
    with pytest.raises(AgreementFileError) as caught:
        load_agreements(tmp_path)
    assert str(caught.value) == "broken.yaml:3: version: must be between 1 and 1000000"


def test_directory_without_agreements_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an agreement")
    with pytest.raises(AgreementFileError) as caught:
        load_agreements(tmp_path)
    assert (caught.value.file, caught.value.line, caught.value.key) == (str(tmp_path), None, "")
    assert "no agreement files" in caught.value.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("fields: [address, uprn]", "fields: [dateOfBirth, yearOfBirth]"),
         "10: fields: 'yearOfBirth' is derived from 'dateOfBirth': name one or the other"),
        (("fields: [address, uprn]", "fields: [postcode, postcodeDistrict]"),
         "10: fields: 'postcodeDistrict' is derived from 'postcode': name one or the other"),
        (("limits:", "counts: {suppress_below: 10}\nlimits:"),
         "14: counts: counts need a countable field (yearOfBirth, ageBand, postcodeDistrict, "
         "programmeStatus, assessmentOutcome)"),
        (("fields: [address, uprn]", "fields: [ageBand]\ncounts: {suppress_below: 1}"),
         "11: counts.suppress_below: must be between 2 and 100"),
        (("fields: [address, uprn]", "fields: [ageBand]\ncounts: {below: 10}"),
         "11: counts.below: unknown key (known keys: suppress_below)"),
    ],
)  # fmt: skip
def test_minimised_fields_and_counts_are_loaded_strictly(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in _listing()
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement(_listing().replace(old, new), source="base-listing.yaml")
    assert str(caught.value) == f"base-listing.yaml:{message}"


def test_a_minimised_listing_with_counts_loads() -> None:
    text = _listing().replace(
        "fields: [address, uprn]", "fields: [ageBand, postcodeDistrict]\ncounts: {suppress_below: 5}"
    )
    agreement = parse_agreement(text, source="base-listing.yaml")
    assert (agreement.fields, agreement.counts_suppress_below) == (("ageBand", "postcodeDistrict"), 5)
    assert parse_agreement(_listing(), source="base-listing.yaml").counts_suppress_below is None
