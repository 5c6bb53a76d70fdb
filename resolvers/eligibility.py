"""Each family's eligibility, from the assessor's needs and partners' recorded contributions.

The programme's rules are data (`policies/eligibility/`) and the evaluator is pure
(`policies.eligibility`); here the evidence is read and the family's timeline (when it is eligible, when it
meets at least one outcome) is kept in `eligibility_intervals`, which the populations read. Only
families with a recorded contribution have a timeline: for every other family the assessor's recorded
result stands alone, as before. A timeline holds the days ahead too (evidence ages out on its window's
anniversary), so a family moves out of a population on the day its evidence ages, without a job.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from policies.eligibility import (
    ASSESSMENT_NEEDS,
    EligibilityRule,
    Evidence,
    Interval,
    evaluate,
    rule_in_force,
    timeline,
)
from resolvers.models import CRITERION, ELIGIBLE, assessments, contributions, eligibility_intervals, people

FAMILY = 0  # the person an assessor's need is recorded for: the family as a whole
ASSESSOR = "council-assessment"  # the source of the assessor's needs
RECORDED = "recorded"  # a contribution whose request's audit event is written: evidence


async def family_evidence(conn: AsyncConnection, household_ids: Collection[int]) -> dict[int, list[Evidence]]:
    """Each family's evidence: the needs its assessor recorded (dated the assessment) and every recorded
    contribution about one of its members."""
    ids = sorted(set(household_ids))
    out: dict[int, list[Evidence]] = {household: [] for household in ids}
    if not ids:
        return out
    for row in await conn.execute(select(assessments).where(assessments.c.household_id.in_(ids))):
        a = row._mapping
        out[a["household_id"]] += [
            Evidence(f"assessment-{a['id']}-{need}", FAMILY, need, a["assessed_on"], ASSESSOR)
            for need in ASSESSMENT_NEEDS
            if a[need]
        ]
    recorded = select(contributions).where(
        contributions.c.household_id.in_(ids), contributions.c.state == RECORDED
    )
    for row in await conn.execute(recorded):
        c = row._mapping
        out[c["household_id"]].append(
            Evidence(
                c["id"], c["person_id"], c["indicator"], c["observed_on"], c["agreement_id"],
                flag=c["flag"], percent=None if c["percent"] is None else float(c["percent"]),
            )
        )  # fmt: skip
    return out


async def refresh_households(
    conn: AsyncConnection, household_ids: Collection[int], rules: Mapping[str, EligibilityRule]
) -> None:
    """Work out again the timelines of these families, in the caller's transaction."""
    ids = sorted(set(household_ids))
    if not ids:
        return
    evidence = await family_evidence(conn, ids)
    await conn.execute(delete(eligibility_intervals).where(eligibility_intervals.c.household_id.in_(ids)))
    rows = []
    for household, facts in evidence.items():
        if not any(e.source != ASSESSOR for e in facts):
            continue  # no contribution: the assessor's recorded result stands alone
        start = min(e.observed_on for e in facts)
        made = timeline(rules, facts, start)
        for kind, intervals in ((ELIGIBLE, made.eligible), (CRITERION, made.criterion_met)):
            rows += [
                {"household_id": household, "kind": kind, "valid_from": i.start, "valid_until": i.until}
                for i in intervals
            ]
    if rows:
        await conn.execute(insert(eligibility_intervals), rows)


async def explain(
    conn: AsyncConnection, person_id: int, rules: Mapping[str, EligibilityRule], day: date
) -> dict[str, Any] | None:
    """Why the person's family is (or is not) eligible on `day`: each outcome of the rule in force, met
    or not, on which evidence from whom and since when; reports that disagree; the assessor's own
    recorded result beside it; and when, on this evidence, the family is in and out. None: no such person."""
    household = (await conn.execute(select(people.c.household_id).where(people.c.id == person_id))).scalar()
    if household is None:
        return None
    facts = (await family_evidence(conn, [household]))[household]
    provenance = {
        row.id: row._mapping
        for row in await conn.execute(select(contributions).where(contributions.c.household_id == household))
    }
    assessed = (
        await conn.execute(select(assessments.c.assessed_on, assessments.c.eligible).where(
            assessments.c.household_id == household
        ))
    ).first()  # fmt: skip
    rule = rule_in_force(rules, day)
    result = evaluate(rule, facts, day)
    made = timeline(rules, facts, min((e.observed_on for e in facts), default=day))

    def described(e: Evidence) -> dict[str, Any]:
        source = provenance.get(e.evidence_id)
        out: dict[str, Any] = {
            "indicator": e.indicator, "observed_on": e.observed_on.isoformat(),
            "about_person": e.person_id or None,  # None: the family, as the assessor recorded it
            "source": "the council's assessment" if e.source == ASSESSOR else e.source,
        }  # fmt: skip
        if e.flag is not None:
            out["value"] = e.flag
        if e.percent is not None:
            out["value"] = e.percent
        if source is not None:
            out.update(
                id=e.evidence_id, client=source["client_id"], officer=source["acting_user"],
                recorded_at=source["recorded_at"].isoformat(), event=source["event_id"],
            )  # fmt: skip
        return out

    return {
        "person_id": person_id,
        "day": day.isoformat(),
        "rule": {"id": rule.id, "name": rule.name, "outcomes_needed": rule.threshold},
        "eligible": result.eligible,
        "since": result.since.isoformat() if result.since else None,
        "outcomes_met": result.met,
        "outcomes": [
            {
                "outcome": o.name, "met": o.met, "since": o.since.isoformat() if o.since else None,
                "evidence": [described(e) for e in o.evidence],
                "conflicts": [described(e) for e in o.conflicts],
            }
            for o in result.outcomes
        ],
        "assessor": None
        if assessed is None
        else {"assessed_on": assessed.assessed_on.isoformat(), "recorded_eligible": bool(assessed.eligible)},
        "eligible_periods": [_period(i) for i in made.eligible],
        "pending_reports": sum(1 for row in provenance.values() if row["state"] != RECORDED),
    }  # fmt: skip


def _period(interval: Interval) -> dict[str, str | None]:
    return {
        "from": interval.start.isoformat(),
        "until": interval.until.isoformat() if interval.until else None,
    }
