"""Loading agreement directories: the shipped agreements, fixture directories, file-level errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import AGREEMENTS_DIR, AgreementFileError, load_agreements

FIXTURES = Path(__file__).parent / "fixtures"
SHIPPED_IDS = {
    "dwp-worklessness",
    "family-hub-outreach",
    "mash-safeguarding",
    "ons-evaluation",
    "police-prevention",
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
