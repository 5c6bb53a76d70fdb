"""GraphQL types that are the same in every view that has them, and the builders of those that are not.

A view's `Person` type is built from its agreement's field list, so a field outside the agreement
does not exist in that schema at all: introspection cannot show it and a query naming it fails
validation exactly like a misspelt field.
"""

from __future__ import annotations

import datetime
from enum import Enum
from typing import Any, Final

import strawberry

from policies import FIELDS_BY_NAME

REF_DESCRIPTION: Final = (
    "Opaque reference to this person, stable for your organisation and meaningless to anyone else."
)
WITHHELD_DESCRIPTION: Final = (
    "Fields of this view that are withheld for this person and therefore null. No reason is given."
)


@strawberry.enum(description="Where the person's family stands in the Supporting Families programme.")
class ProgrammeStatus(Enum):
    NOT_ASSESSED = "NOT_ASSESSED"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"
    ELIGIBLE = "ELIGIBLE"
    COORDINATED_SUPPORT = "COORDINATED_SUPPORT"


@strawberry.enum(description="Result of the family's Supporting Families assessment.")
class AssessmentOutcome(Enum):
    ELIGIBLE = "ELIGIBLE"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"


@strawberry.enum(
    description="The band of the age the person reaches this calendar year (a minimised value: no date of "
    "birth; it changes on 1 January, never on a birthday)."
)
class AgeBand(Enum):
    AGE_0_TO_4 = "AGE_0_TO_4"
    AGE_5_TO_9 = "AGE_5_TO_9"
    AGE_10_TO_17 = "AGE_10_TO_17"
    AGE_18_TO_24 = "AGE_18_TO_24"
    AGE_25_TO_44 = "AGE_25_TO_44"
    AGE_45_TO_64 = "AGE_45_TO_64"
    AGE_65_AND_OVER = "AGE_65_AND_OVER"


@strawberry.type(description="A postal address.")
class Address:
    line1: str
    line2: str | None
    town: str
    postcode: str


@strawberry.type(description="Where a page ends and whether another follows.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None = strawberry.field(description="Pass as `after` to fetch the next page.")


# Python attribute name and GraphQL type of each person field (members is added per view).
FIELD_TYPES: Final[dict[str, tuple[str, Any]]] = {
    "givenName": ("given_name", str | None),
    "familyName": ("family_name", str | None),
    "dateOfBirth": ("date_of_birth", datetime.date | None),
    "yearOfBirth": ("year_of_birth", int | None),
    "ageBand": ("age_band", AgeBand | None),
    "postcode": ("postcode", str | None),
    "postcodeDistrict": ("postcode_district", str | None),
    "address": ("address", Address | None),
    "uprn": ("uprn", str | None),
    "phone": ("phone", str | None),
    "email": ("email", str | None),
    "school": ("school", str | None),
    "programmeStatus": ("programme_status", ProgrammeStatus | None),
    "assessmentOutcome": ("assessment_outcome", AssessmentOutcome | None),
    "familyRef": ("family_ref", strawberry.ID | None),
    "members": ("members", None),
}


def person_type(
    name: str, fields: tuple[str, ...], *, description: str, member: type | None = None, withheld: bool
) -> type:
    """A strawberry type with `ref` and the given fields in agreement order; with `withheld` only in a
    view that may know who has a protected address (break-glass): anywhere else the list would be an
    oracle for the marker."""
    annotations: dict[str, Any] = {"ref": strawberry.ID}
    namespace: dict[str, Any] = {"ref": strawberry.field(description=REF_DESCRIPTION)}
    for field_name in fields:
        attribute, graphql_type = FIELD_TYPES[field_name]
        spec = FIELDS_BY_NAME[field_name]
        if field_name == "members":
            if member is None:
                raise ValueError("a members field needs a member type")
            annotations[attribute] = list[member]  # type: ignore[valid-type]
            namespace[attribute] = strawberry.field(
                name=field_name, description=spec.description, default_factory=list
            )
        else:
            annotations[attribute] = graphql_type
            namespace[attribute] = strawberry.field(
                name=field_name, description=spec.description, default=None
            )
    if withheld:
        annotations["withheld"] = list[str]
        namespace["withheld"] = strawberry.field(description=WITHHELD_DESCRIPTION, default_factory=list)
    cls = type(name, (), {"__annotations__": annotations, "__module__": __name__, **namespace})
    return strawberry.type(cls, name=name, description=description)


ENUMS: Final[dict[str, type[Enum]]] = {
    "programmeStatus": ProgrammeStatus,
    "assessmentOutcome": AssessmentOutcome,
    "ageBand": AgeBand,
}


def counts_type(fields: tuple[str, ...], suppress_below: int) -> type:
    """One group of `peopleCounts`: the countable fields it is grouped by, and how many people."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for field_name in fields:
        attribute, graphql_type = FIELD_TYPES[field_name]
        annotations[attribute] = graphql_type
        namespace[attribute] = strawberry.field(
            name=field_name, description=FIELDS_BY_NAME[field_name].description
        )
    annotations["people"] = int
    namespace["people"] = strawberry.field(
        description=f"How many people of the view are in this group: never fewer than {suppress_below}."
    )
    cls = type("PeopleCount", (), {"__annotations__": annotations, "__module__": __name__, **namespace})
    return strawberry.type(
        cls,
        name="PeopleCount",
        description=f"A group of people with the same values. Groups of fewer than {suppress_below} "
        "people are left out (small-number suppression): absent, not zero.",
    )


def connection_types(person: type) -> tuple[type, type]:
    edge = strawberry.type(
        type(
            "PersonEdge",
            (),
            {
                "__annotations__": {"cursor": str, "node": person},
                "__module__": __name__,
                "cursor": strawberry.field(description="Position of this person in the list."),
            },
        ),
        name="PersonEdge",
    )
    connection = strawberry.type(
        type(
            "PersonConnection",
            (),
            {"__annotations__": {"edges": list[edge], "page_info": PageInfo}, "__module__": __name__},  # type: ignore[valid-type]
        ),
        name="PersonConnection",
        description="A page of people, in a stable order.",
    )
    return edge, connection
