"""Each partner sees exactly its agreement: these run on SQLite and PostgreSQL, in-process and over
uvicorn on 127.0.0.1 with real tokens from /oauth/token."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from policies import Agreement
from tests.conftest import FIXED_TODAY
from tests.support.oracle import LOCATION_FIELDS, Oracle, Person
from tests.support.partners import Partner
from tests.support.population import EdgeCases, date_of_birth

LISTING = [
    "police-prevention",
    "dwp-worklessness",
    "ons-evaluation",
    "family-hub-outreach",
    "public-health-planning",
]
ALL = [*LISTING, "youth-justice", "mash-safeguarding"]
WITH_LOCATION_WITHHELD = ["mash-safeguarding"]  # the only view that may know who has the marker

PartnerFactory = Callable[[str], Partner]


def _selection(agreement: Agreement) -> str:
    parts = ["ref", "withheld"]
    for name in agreement.fields:
        if name == "address":
            parts.append("address { line1 line2 town postcode }")
        elif name == "members":
            parts.append("members { ref withheld }")
        else:
            parts.append(name)
    return " ".join(parts)


def _location_values(person: Person) -> set[str]:
    address = person.address
    values = {
        address["line1"],
        address["postcode"],
        address["town"],
        person.phone,
        person.email,
        person.school,
        address["uprn"],
        address["line2"],
    }
    # The town is "London" for most people, so its presence alone proves nothing.
    return {v for v in values if v and v not in {"London", "Westminster", "Paddington", "Pimlico"}}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


async def _find(partner: Partner, agreement: Agreement, person: Person, selection: str = "ref") -> Any:
    """findPeople with the agreement's match fields, filled from the person's true record."""
    types = {"givenName": "String!", "familyName": "String!", "dateOfBirth": "Date!"}
    values = {
        "givenName": person.given_name,
        "familyName": person.family_name,
        "dateOfBirth": person.date_of_birth.isoformat(),
    }
    declared = ", ".join(f"${name}: {types[name]}" for name in agreement.match)
    arguments = ", ".join(f"{name}: ${name}" for name in agreement.match)
    data = await partner.data(
        f"query({declared}) {{ findPeople({arguments}) {{ {selection} }} }}",
        {name: values[name] for name in agreement.match},
    )
    return data["findPeople"]


@pytest.mark.parametrize("agreement_id", LISTING)
async def test_listing_returns_exactly_the_population(
    agreement_id: str, partner: PartnerFactory, agreements: dict[str, Agreement], oracle: Oracle
) -> None:
    agreement = agreements[agreement_id]
    police = partner(agreement_id)
    people = await police.all_people(page_size=agreement.limits.max_page_size or 50)
    returned = [police.person_id(p["ref"]) for p in people]
    assert len(returned) == len(set(returned)), "a person appeared on two pages"
    expected = oracle.expected(agreement, FIXED_TODAY)
    assert expected, "the test population gives this agreement no one to see"
    assert set(returned) == expected


@pytest.mark.parametrize("agreement_id", ALL)
async def test_restricted_and_past_retention_people_are_invisible_by_every_root_field(
    agreement_id: str,
    partner: PartnerFactory,
    agreements: dict[str, Agreement],
    oracle: Oracle,
    cases: EdgeCases,
) -> None:
    agreement = agreements[agreement_id]
    client = partner(agreement_id)
    hidden = oracle.invisible_everywhere(FIXED_TODAY)
    assert {
        cases.id("cohort_restricted"),
        cases.id("cohort_past_retention"),
        cases.id("cohort_legal_hold_past_retention"),
        cases.id("mash_child_restricted"),
    } <= hidden
    if agreement.listing:
        listed = {
            client.person_id(p["ref"])
            for p in await client.all_people(page_size=agreement.limits.max_page_size or 50)
        }
        assert not listed & hidden
    for key in (
        "cohort_restricted",
        "cohort_past_retention",
        "cohort_legal_hold_past_retention",
        "mash_child_restricted",
    ):
        person_id = cases.id(key)
        data = await client.data(
            "query($ref: ID!) { person(ref: $ref) { ref } }", {"ref": client.ref(person_id)}
        )
        assert data["person"] is None, key
        if agreement.match:
            assert await _find(client, agreement, oracle.people[person_id]) is None, key


async def test_retention_date_is_inclusive(partner: PartnerFactory, cases: EdgeCases) -> None:
    police = partner("police-prevention")
    ref = police.ref(cases.id("cohort_retention_today"))
    data = await police.data("query($ref: ID!) { person(ref: $ref) { ref givenName } }", {"ref": ref})
    assert data["person"] == {"ref": ref, "givenName": "Eve"}


@pytest.mark.parametrize("agreement_id", WITH_LOCATION_WITHHELD)
async def test_protected_address_people_carry_no_location_field_in_any_shape_of_query(
    agreement_id: str,
    partner: PartnerFactory,
    agreements: dict[str, Agreement],
    oracle: Oracle,
    cases: EdgeCases,
) -> None:
    agreement = agreements[agreement_id]
    client = partner(agreement_id)
    key = {
        "police-prevention": "cohort_protected",
        "youth-justice": "child_protected",
        "mash-safeguarding": "refuge_adult",
    }[agreement_id]
    person = oracle.people[cases.id(key)]
    location = [name for name in agreement.fields if name in LOCATION_FIELDS]
    expected_withheld = location
    forbidden = _location_values(person)
    assert forbidden, "the case has location values to leak"

    flat = " ".join(
        name if name != "address" else "address { line1 line2 town postcode }" for name in location
    )
    aliased = " ".join(
        f"a_{name}: {name}" if name != "address" else "a_address: address { l: line1 p: postcode }"
        for name in location
    )
    query = (
        "query($ref: ID!) {"
        f"  plain: person(ref: $ref) {{ ref withheld {flat} }}"
        f"  aliased: person(ref: $ref) {{ ref {aliased} }}"
        "  spread: person(ref: $ref) { ...Where }"
        f"  inline: person(ref: $ref) {{ ... on Person {{ {flat} withheld }} }}"
        "}"
        f"fragment Where on Person {{ ref {flat} }}"
    )
    response = await client.post(query, {"ref": client.ref(person.id)})
    body = response.json()
    assert "errors" not in body, body
    for root in ("plain", "aliased", "spread", "inline"):
        result = body["data"][root]
        assert result is not None, root
        for field, value in result.items():
            if field not in {"ref", "withheld"}:
                assert value is None, (root, field)
    assert body["data"]["plain"]["withheld"] == expected_withheld
    assert not [v for v in forbidden if v in response.text]

    if agreement.match:
        found = await _find(client, agreement, person, selection=f"ref withheld {flat}")
        assert found is not None and found["ref"] == client.ref(person.id)
        assert all(found[name] is None for name in location)
        assert found["withheld"] == expected_withheld
    if agreement.listing:
        for node in await client.all_people(selection=_selection(agreement), page_size=100):
            listed = oracle.people[client.person_id(node["ref"])]
            if listed.protected:
                assert node["withheld"] == expected_withheld
                assert not set(_strings(node)) & _location_values(listed)
            else:
                assert node["withheld"] == []


@pytest.mark.parametrize(
    "agreement_id",
    [*LISTING, "youth-justice"],
)
async def test_excluding_agreements_never_reach_protected_people(
    agreement_id: str,
    partner: PartnerFactory,
    agreements: dict[str, Agreement],
    cases: EdgeCases,
    oracle: Oracle,
) -> None:
    """Every view but MASH's: a protected person is not returned by ref, by match or in a list."""
    agreement = agreements[agreement_id]
    assert agreement.protected_address == "exclude"
    client = partner(agreement_id)
    key = "child_protected" if agreement_id == "youth-justice" else "cohort_protected"
    person = oracle.people[cases.id(key)]
    assert person.protected
    data = await client.data("query($ref: ID!) { person(ref: $ref) { ref } }", {"ref": client.ref(person.id)})
    assert data["person"] is None
    if agreement.match:
        assert await _find(client, agreement, person, selection="ref") is None
    if agreement.listing:
        listed = {client.person_id(p["ref"]) for p in await client.all_people()}
        assert not {p.id for p in oracle.people.values() if p.protected} & listed


async def test_mash_members_obey_visibility_and_protection(
    partner: PartnerFactory, agreements: dict[str, Agreement], oracle: Oracle, cases: EdgeCases
) -> None:
    mash = partner("mash-safeguarding")
    agreement = agreements["mash-safeguarding"]
    adult = oracle.people[cases.id("mash_adult")]
    found = await _find(mash, agreement, adult, selection="ref members { ref givenName school }")
    assert found is not None
    member_ids = sorted(mash.person_id(m["ref"]) for m in found["members"])
    # The restricted child and the adult past retention are not members anyone can see.
    assert member_ids == [cases.id("mash_child")]

    refuge = oracle.people[cases.id("refuge_adult")]
    found = await _find(
        mash,
        agreement,
        refuge,
        selection="ref address { line1 } withheld members { ref address { line1 } school withheld }",
    )
    assert found is not None
    assert found["address"] is None and "address" in found["withheld"]
    [child] = found["members"]
    assert mash.person_id(child["ref"]) == cases.id("refuge_child")
    assert child["address"] is None and child["school"] is None
    assert {"address", "school"} <= set(child["withheld"])


async def test_mash_break_glass_discloses_protected_location_only_when_stated(
    partner: PartnerFactory, agreements: dict[str, Agreement], oracle: Oracle, cases: EdgeCases
) -> None:
    mash = partner("mash-safeguarding")
    refuge = oracle.people[cases.id("refuge_adult")]
    query = "query($ref: ID!) { person(ref: $ref) { address { postcode } withheld } }"
    case = {"X-Case-Reference": f"CASE-{secrets.token_hex(4)}"}  # a window is per officer and case
    plain = await mash.data(query, {"ref": mash.ref(refuge.id)}, headers=case)
    assert plain["person"]["address"] is None
    broken = await mash.data(
        query,
        {"ref": mash.ref(refuge.id)},
        headers={**case, "X-Break-Glass-Reason": "risk to life: referral 77"},
    )
    assert broken["person"] == {"address": {"postcode": refuge.address["postcode"]}, "withheld": []}

    police = partner("police-prevention")
    refused = await police.post(
        "{ people(first: 1) { edges { node { ref } } } }", headers={"X-Break-Glass-Reason": "urgent"}
    )
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_objection_is_honoured_exactly_where_the_agreement_says(
    partner: PartnerFactory, cases: EdgeCases
) -> None:
    family_hub, police = partner("family-hub-outreach"), partner("police-prevention")
    fh_objector, police_objector = cases.id("fh_objector"), cases.id("police_objector")
    hub_listed = {family_hub.person_id(p["ref"]) for p in await family_hub.all_people()}
    police_listed = {police.person_id(p["ref"]) for p in await police.all_people()}
    assert fh_objector not in hub_listed
    assert fh_objector in police_listed  # objecting to the Family Hub share does not stop the police share
    assert police_objector in police_listed  # the police share is a legal gateway: objection does not apply
    assert police_objector in hub_listed
    data = await family_hub.data(
        "query($ref: ID!) { person(ref: $ref) { ref } }", {"ref": family_hub.ref(fh_objector)}
    )
    assert data["person"] is None


async def test_refs_differ_across_partners_and_round_trip_within_one(
    partner: PartnerFactory, cases: EdgeCases
) -> None:
    police, ons = partner("police-prevention"), partner("ons-evaluation")
    person_id = cases.id("cohort_plain")
    police_ref = next(p["ref"] for p in await police.all_people() if police.person_id(p["ref"]) == person_id)
    ons_ref = next(
        p["ref"] for p in await ons.all_people(page_size=500) if ons.person_id(p["ref"]) == person_id
    )
    assert police_ref != ons_ref
    query = "query($ref: ID!) { person(ref: $ref) { ref givenName familyName } }"
    assert (await police.data(query, {"ref": police_ref}))["person"] == {
        "ref": police_ref,
        "givenName": "Ada",
        "familyName": "Brackenridge-Vale",
    }
    assert (await ons.data(query, {"ref": ons_ref}))["person"]["ref"] == ons_ref
    # Another partner's ref, a tampered ref and a made-up ref all read as "no such person".
    assert (await ons.data(query, {"ref": police_ref}))["person"] is None
    assert (await police.data(query, {"ref": ons_ref}))["person"] is None
    tampered = police_ref[:-2] + ("AA" if not police_ref.endswith("AA") else "BB")
    assert (await police.data(query, {"ref": tampered}))["person"] is None
    assert (await police.data(query, {"ref": str(person_id)}))["person"] is None


async def test_family_refs_group_a_household_for_one_partner_only(
    partner: PartnerFactory, cases: EdgeCases, oracle: Oracle
) -> None:
    ons, mash = partner("ons-evaluation"), partner("mash-safeguarding")
    household = [cases.id(k) for k in ("child_10_today", "child_17", "adult_18_today")]
    query = "query($ref: ID!) { person(ref: $ref) { familyRef } }"
    ons_refs = {(await ons.data(query, {"ref": ons.ref(i)}))["person"]["familyRef"] for i in household}
    mash_refs = {(await mash.data(query, {"ref": mash.ref(i)}))["person"]["familyRef"] for i in household}
    assert len(ons_refs) == 1 and len(mash_refs) == 1
    assert ons_refs != mash_refs


async def test_youth_justice_reaches_children_aged_10_to_17_on_the_day(
    partner: PartnerFactory, agreements: dict[str, Agreement], oracle: Oracle, cases: EdgeCases
) -> None:
    yot = partner("youth-justice")
    agreement = agreements["youth-justice"]
    outcomes = {}
    for key in ("child_10_today", "child_10_tomorrow", "child_17", "adult_18_today"):
        outcomes[key] = await _find(yot, agreement, oracle.people[cases.id(key)]) is not None
    assert outcomes == {
        "child_10_today": True,
        "child_10_tomorrow": False,
        "child_17": True,
        "adult_18_today": False,
    }
    assert (
        date_of_birth(cases.case("child_10_today"), FIXED_TODAY).replace(year=FIXED_TODAY.year) == FIXED_TODAY
    )


async def test_single_match_returns_no_one_when_two_people_match(
    partner: PartnerFactory, agreements: dict[str, Agreement], oracle: Oracle, cases: EdgeCases
) -> None:
    twin = oracle.people[cases.id("twin_a")]
    for agreement_id in ("police-prevention", "youth-justice"):
        assert await _find(partner(agreement_id), agreements[agreement_id], twin) is None, agreement_id
    # MASH searches with the given name too, so it finds each twin.
    mash = partner("mash-safeguarding")
    found = await _find(mash, agreements["mash-safeguarding"], twin)
    assert found is not None and mash.person_id(found["ref"]) == twin.id


async def test_find_people_normalises_case_and_spacing_of_names(
    partner: PartnerFactory, cases: EdgeCases
) -> None:
    police = partner("police-prevention")
    data = await police.data(
        "query($n: String!, $d: Date!) { findPeople(familyName: $n, dateOfBirth: $d) { ref givenName } }",
        {
            "n": "  brackenridge-VALE ",
            "d": date_of_birth(cases.case("cohort_plain"), FIXED_TODAY).isoformat(),
        },
    )
    assert data["findPeople"] is not None and police.person_id(data["findPeople"]["ref"]) == cases.id(
        "cohort_plain"
    )


async def test_uprn_is_served_as_a_twelve_digit_string(partner: PartnerFactory, cases: EdgeCases) -> None:
    dwp = partner("dwp-worklessness")
    data = await dwp.data(
        "query($ref: ID!) { person(ref: $ref) { uprn address { line1 town postcode } } }",
        {"ref": dwp.ref(cases.id("criterion_only"))},
    )
    assert data["person"]["uprn"] == "100023336956"
    assert int(data["person"]["uprn"]) > 2**31


async def test_a_disabled_client_gets_no_new_token_and_its_live_token_stops_working(
    http: Any, engine: Any, settings: Any
) -> None:
    from gateway.oauth import disable_client
    from tests.conftest import REF_SECRET
    from tests.support.partners import enrol

    client = await enrol(
        engine, http, "ons-evaluation", ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
    )
    token = await client.token()
    assert (
        await client.post("{ people(first: 1) { edges { node { ref } } } }", token=token)
    ).status_code == 200

    async with engine.begin() as conn:
        await disable_client(conn, client.client_id)
    refused = await client.token_response()
    assert refused.status_code == 401
    assert refused.json() == {"error": "invalid_client", "error_description": "client authentication failed"}
    stale = await client.post("{ people(first: 1) { edges { node { ref } } } }", token=token)
    assert stale.status_code == 401
    assert stale.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
