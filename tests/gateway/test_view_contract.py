"""What each partner can learn about the schema: exactly its view, and nothing by way of errors.

Where an agreement runs registered documents only (police, DWP, ONS), a document that does not fit
the view cannot be registered, so it is refused before it is read: the same refusal for a field of
another view as for one that exists nowhere.

Over both transports. These need no particular data, but run on both databases with everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from policies import PERSON_FIELDS, Agreement, load_agreements
from tests.support.documents import PERSON_VIEWS
from tests.support.partners import Partner

ALL = PERSON_VIEWS
TRUSTED = {a.id for a in load_agreements().values() if a.access.trusted_documents_only}
NOWHERE = "zzNoSuchThing"
SCALARS = {"String", "Boolean", "ID", "Int", "Date"}


def _expected_types(agreement: Agreement) -> set[str]:
    types = {"Query", "Person"} | SCALARS - {"Int"}
    # Every person view has the Art 19 feed of notifications, and the mutation that acknowledges one.
    types |= {"Mutation", "Notification", "NotificationEdge", "NotificationConnection", "NotificationKind"}
    types |= {"PageInfo", "Int", "DateTime"}
    if agreement.listing:
        types |= {"PersonConnection", "PersonEdge"}
    if "address" in agreement.fields:
        types.add("Address")
    if "members" in agreement.fields:
        types.add("HouseholdMember")
    if "programmeStatus" in agreement.fields:
        types.add("ProgrammeStatus")
    if "assessmentOutcome" in agreement.fields:
        types.add("AssessmentOutcome")
    if "ageBand" in agreement.fields:
        types.add("AgeBand")
    if agreement.counts_suppress_below is not None:
        types.add("PeopleCount")
    if agreement.contributes:
        types.add("Contribution")
    if "reportTwoYearOldOfferEligible" in agreement.contributes:
        types.add("Referral")
    if "reportAttendance" in agreement.contributes:
        types.add("Float")  # the term's attendance, in percent
    if (
        "dateOfBirth" not in agreement.fields
        and "dateOfBirth" not in agreement.match
        and not agreement.contributes
    ):
        types.discard("Date")  # a contribution names the day it reports
    return types


async def _errors(partner: Partner, query: str) -> list[dict[str, Any]]:
    """The errors of a document that does not fit the view: from validation (nothing executed), or
    DOCUMENT_NOT_TRUSTED where only registered documents run (it could not be registered)."""
    response = await partner.post(query)
    body = response.json()
    if partner.agreement in TRUSTED:
        assert response.status_code == 400, response.text
        assert [error["extensions"]["code"] for error in body["errors"]] == ["DOCUMENT_NOT_TRUSTED"], body
    else:
        assert response.status_code == 200, response.text
    assert "data" not in body, "a query that fails validation must not execute"
    errors = body["errors"]
    assert isinstance(errors, list)
    return errors


@pytest.mark.parametrize("agreement_id", ALL)
async def test_introspection_lists_exactly_the_agreements_fields_and_types(
    agreement_id: str, partner: Callable[[str], Partner], agreements: dict[str, Agreement]
) -> None:
    agreement = agreements[agreement_id]
    data = await partner(agreement_id).data(
        "{ __schema { types { name } queryType { fields { name args { name } } } }"
        '  __type(name: "Person") { fields { name } } }'
    )
    person_fields = [f["name"] for f in data["__type"]["fields"]]
    # `withheld` only where the view may know who has a protected address (MASH, with break-glass).
    withheld = ["withheld"] if agreement.protected_address == "withhold" else []
    assert withheld == (["withheld"] if agreement.break_glass else [])
    assert person_fields == ["ref", *agreement.fields, *withheld]
    types = {t["name"] for t in data["__schema"]["types"] if not t["name"].startswith("__")}
    assert types == _expected_types(agreement)
    roots = {f["name"]: [a["name"] for a in f["args"]] for f in data["__schema"]["queryType"]["fields"]}
    expected_roots: dict[str, list[str]] = {"person": ["ref"], "notifications": ["first", "after"]}
    if agreement.listing:
        expected_roots["people"] = ["first", "after"]
    if agreement.match:
        expected_roots["findPeople"] = list(agreement.match)
    if agreement.counts_suppress_below is not None:
        expected_roots["peopleCounts"] = []
    assert roots == expected_roots


@pytest.mark.parametrize("agreement_id", ALL)
async def test_another_views_field_fails_exactly_like_a_field_that_exists_nowhere(
    agreement_id: str, partner: Callable[[str], Partner], agreements: dict[str, Agreement]
) -> None:
    agreement = agreements[agreement_id]
    client = partner(agreement_id)
    [nowhere] = await _errors(client, f'{{ person(ref: "x") {{ {NOWHERE} }} }}')
    outside = [spec.name for spec in PERSON_FIELDS if spec.name not in agreement.fields]
    assert outside, "every agreement leaves something out"
    for name in outside:
        [error] = await _errors(client, f'{{ person(ref: "x") {{ {name} }} }}')
        assert error == _renamed(nowhere, NOWHERE, name), name
        assert "Did you mean" not in str(error)


@pytest.mark.parametrize("agreement_id", ALL)
async def test_another_views_root_argument_and_type_fail_like_ones_that_exist_nowhere(
    agreement_id: str, partner: Callable[[str], Partner], agreements: dict[str, Agreement]
) -> None:
    agreement = agreements[agreement_id]
    client = partner(agreement_id)

    [root_nowhere] = await _errors(client, f"{{ {NOWHERE} {{ ref }} }}")
    for root in ("people", "findPeople"):
        exists_here = (root == "people" and agreement.listing) or (
            root == "findPeople" and bool(agreement.match)
        )
        if not exists_here:
            [error] = await _errors(client, f"{{ {root} {{ ref }} }}")
            assert error == _renamed(root_nowhere, NOWHERE, root)

    if agreement.match:
        arguments = ", ".join(
            f'{m}: "x"' if m != "dateOfBirth" else f'{m}: "2000-01-01"' for m in agreement.match
        )
        [arg_nowhere] = await _errors(client, f'{{ findPeople({arguments}, {NOWHERE}: "x") {{ ref }} }}')
        for other in ("givenName", "postcode", "uprn"):
            if other not in agreement.match:
                [error] = await _errors(client, f'{{ findPeople({arguments}, {other}: "x") {{ ref }} }}')
                assert error == _renamed(arg_nowhere, NOWHERE, other), other

    [type_nowhere] = await _errors(client, f'{{ person(ref: "x") {{ ... on {NOWHERE} {{ ref }} }} }}')
    for type_name in ("Address", "HouseholdMember", "PersonConnection", "ProgrammeStatus"):
        if type_name not in _expected_types(agreement):
            [error] = await _errors(client, f'{{ person(ref: "x") {{ ... on {type_name} {{ ref }} }} }}')
            assert error == _renamed(type_nowhere, NOWHERE, type_name), type_name


def _renamed(error: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """The error the other name would give: the same, with the name swapped (locations point before it)."""
    return {**error, "message": error["message"].replace(old, new)}
