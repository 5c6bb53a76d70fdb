"""The council's record model and the data access that obeys a Decision.

Imports only from `policies`. Returns plain records; never commits (the gateway owns transactions).
"""

from resolvers.models import metadata
from resolvers.people import (
    ADDRESS_PARTS,
    AccessError,
    DecisionNotAllowedError,
    FieldNotAllowedError,
    LookupNotAllowedError,
    Page,
    PageSizeError,
    PersonRecord,
    count_people,
    get_person,
    household_members,
    list_people,
    match_people,
)
from resolvers.refs import RefCodec, RefKind
from resolvers.seeding import PopulationNotEmptyError, SeedSummary, seed_population

__all__ = [
    "ADDRESS_PARTS",
    "AccessError",
    "DecisionNotAllowedError",
    "FieldNotAllowedError",
    "LookupNotAllowedError",
    "Page",
    "PageSizeError",
    "PersonRecord",
    "PopulationNotEmptyError",
    "RefCodec",
    "RefKind",
    "SeedSummary",
    "count_people",
    "get_person",
    "household_members",
    "list_people",
    "match_people",
    "metadata",
    "seed_population",
]
