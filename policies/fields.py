"""The person fields an agreement may name, as the partner sees them in GraphQL.

This catalogue is the vocabulary of `fields:` and `match:` in an agreement file. A name that is not
here is an error at load time, so a typo in an agreement can never widen or silently narrow a view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    description: str
    # Location or contact detail: never disclosed for a person with a protected-address marker
    # (refuge, witness protection), except through break-glass where an agreement allows it.
    reveals_location: bool = False
    # May be used as a findPeople argument (only if the agreement also discloses it: searching on
    # a field you cannot see would turn the search into an oracle for that field).
    matchable: bool = False


PERSON_FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec("givenName", "Given name as recorded by the council.", matchable=True),
    FieldSpec("familyName", "Family name as recorded by the council.", matchable=True),
    FieldSpec("dateOfBirth", "Date of birth.", matchable=True),
    FieldSpec(
        "yearOfBirth", "Year of birth only, derived from the date of birth by the database (minimised)."
    ),
    FieldSpec(
        "ageBand",
        "Band of the age reached this calendar year, derived from the year of birth by the database "
        "(minimised: it changes on 1 January, never on a birthday).",
    ),
    FieldSpec("postcode", "Postcode of the household's address.", reveals_location=True, matchable=True),
    FieldSpec(
        "postcodeDistrict",
        "Postcode district (the outward code, e.g. W2) of the household's address, derived by the "
        "database (minimised).",
        reveals_location=True,
    ),
    FieldSpec("address", "Household address (line1, line2, town, postcode).", reveals_location=True),
    FieldSpec(
        "uprn",
        "Unique Property Reference Number of the household's address: up to 12 digits, as a string.",
        reveals_location=True,
    ),
    FieldSpec("phone", "Contact telephone number.", reveals_location=True),
    FieldSpec("email", "Contact email address.", reveals_location=True),
    FieldSpec("school", "School the child attends.", reveals_location=True),
    FieldSpec("programmeStatus", "Where the person's family stands in the Supporting Families programme."),
    FieldSpec("assessmentOutcome", "Result of the family's Supporting Families assessment."),
    FieldSpec(
        "familyRef",
        "Opaque reference to the person's family, stable for this partner, shared by its members.",
    ),
    FieldSpec("members", "Other visible members of the person's household."),
)

# What an agreement over the access ledger (population access-ledger) may name in `fields:`.
LEDGER_FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec("auditEvents", "Search the audit events: one per request, allowed or refused."),
    FieldSpec("disclosures", "Every disclosure of one person: partner, time, agreement, purpose, fields."),
    FieldSpec("breakGlass", "The break-glass windows (MASH), newest first, and their reviews."),
    FieldSpec(
        "rightsRequests",
        "One person's own requests (access, rectification, erasure, restriction, objection).",
    ),
    FieldSpec(
        "eligibility",
        "Why one person's family is eligible for the programme or not: outcomes, evidence, who reported it.",
    ),
)

FIELDS_BY_NAME: Final[dict[str, FieldSpec]] = {spec.name: spec for spec in PERSON_FIELDS}
LEDGER_FIELDS_BY_NAME: Final[dict[str, FieldSpec]] = {spec.name: spec for spec in LEDGER_FIELDS}
LOCATION_FIELDS: Final[frozenset[str]] = frozenset(s.name for s in PERSON_FIELDS if s.reveals_location)
MATCHABLE_FIELDS: Final[frozenset[str]] = frozenset(s.name for s in PERSON_FIELDS if s.matchable)


# Derived values an agreement may ask for instead of the raw one (value-level minimisation): the
# database computes them, so the raw value is never read into the gateway for these fields.
DERIVED_FIELDS: Final[dict[str, str]] = {
    "yearOfBirth": "dateOfBirth",
    "ageBand": "dateOfBirth",
    "postcodeDistrict": "postcode",
}
# What a view's `peopleCounts` may group by: coarse values only, never a name, a date or an address.
COUNTABLE_FIELDS: Final[tuple[str, ...]] = (
    "yearOfBirth", "ageBand", "postcodeDistrict", "programmeStatus", "assessmentOutcome",
)  # fmt: skip


def field_order(names: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The names in catalogue order, so that views and `withheld` lists read the same everywhere."""
    return tuple(spec.name for spec in PERSON_FIELDS if spec.name in names)
