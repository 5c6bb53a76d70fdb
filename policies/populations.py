"""Named row scopes an agreement's `population:` may use.

The evaluator only knows the names and what they mean in words; `resolvers/` turns each name into a
WHERE clause. A test checks that the two lists agree, so a population cannot exist on paper only.
"""

from __future__ import annotations

from typing import Final

POPULATIONS: Final[dict[str, str]] = {
    "supporting-families-cohort": (
        "People whose family's Supporting Families assessment found them eligible "
        "(in need of support with at least three of the ten outcomes)."
    ),
    "eligibility-criterion-met": (
        "People whose family's assessment found a need for support with at least one of the ten outcomes."
    ),
    "assessed": "People whose family has had a Supporting Families assessment, eligible or not.",
    "eligible-without-coordinated-support": (
        "People in eligible families that are not receiving coordinated support."
    ),
    "children-10-to-17": "Children aged 10 to 17 on the day of the request.",
    "school-age-children": "Children aged 4 to 17 on the day of the request.",
    "all-records": (
        "Every person on record. Only for agreements without listing: people are reached one at a "
        "time through a referral search."
    ),
}


# Not people at all: the gateway's own access ledger, for the council's security team.
LEDGER_POPULATION: Final = "access-ledger"
LEDGER_DESCRIPTION: Final = (
    "The access ledger: who saw which fields of whom, when, why and under which agreement."
)


def is_known_population(name: str) -> bool:
    return name in POPULATIONS or name == LEDGER_POPULATION
