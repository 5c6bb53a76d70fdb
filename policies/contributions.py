"""What a partner may contribute about a person: the mutations an agreement's `contributes:` may name.

Each reports one indicator of `policies.eligibility` about a person the partner can see (by its own ref),
with the values that indicator carries. The catalogue is here so that an agreement naming anything else
fails at load time, like an unknown field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from policies.eligibility import INDICATORS

ValueKind = Literal["date", "flag", "term", "referral"]


@dataclass(frozen=True, slots=True)
class ContributionSpec:
    name: str  # the mutation
    indicator: str  # what it reports (policies.eligibility.INDICATORS), or the referral's kind
    # date: an event on a day; flag: yes or no as of a day; term: a percentage for a term; referral: a
    # person the partner names (name, date of birth, address), whom the council may not yet know
    values: ValueKind
    description: str


CONTRIBUTIONS: Final[dict[str, ContributionSpec]] = {
    spec.name: spec
    for spec in (
        ContributionSpec(
            "reportProvenOffence", "proven_offence", "date",
            "Report that the person was proven to have committed an offence (or was cautioned) on `date`.",
        ),
        ContributionSpec(
            "reportAntisocialBehaviourIntervention", "antisocial_behaviour_intervention", "date",
            "Report an anti-social behaviour intervention for the person on `date`.",
        ),
        ContributionSpec(
            "reportBenefitStatus", "out_of_work_benefits", "flag",
            "Report whether the person receives out-of-work benefits, as of `asOf`.",
        ),
        ContributionSpec(
            "reportAttendance", "school_attendance", "term",
            "Report the child's school attendance, in percent, for a term (`2026-autumn`: a term is named "
            "by its year and season, autumn, spring or summer, and dated its last day).",
        ),
        ContributionSpec(
            "reportTwoYearOldOfferEligible", "two_year_old_offer", "referral",
            "Refer a child eligible for the funded childcare offer for two-year-olds, by name, date of birth "
            "and address: the council matches the child to its records, or opens one, or has an officer "
            "decide when a match is uncertain. The answer is the same whichever it is.",
        ),
    )
}  # fmt: skip
REFERRALS: Final = frozenset(name for name, spec in CONTRIBUTIONS.items() if spec.values == "referral")
if any(
    s.indicator not in INDICATORS for s in CONTRIBUTIONS.values() if s.values != "referral"
):  # pragma: no cover
    raise RuntimeError("a contribution reports an indicator the eligibility rules do not know")
