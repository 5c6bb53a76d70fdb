"""Programme eligibility as data: both rules as tables, their windows to the day, conflicts kept and
surfaced, and the rule files loaded strictly. Pure: no database, no clock."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from policies.eligibility import (
    ASSESSMENT_NEEDS,
    EligibilityFileError,
    Evidence,
    Interval,
    add_months,
    evaluate,
    load_eligibility,
    rule_in_force,
    timeline,
)
from resolvers.models import OUTCOMES

RULES = load_eligibility()
NOW = RULES["supporting-families-2022"]
BEFORE = RULES["supporting-families-2015"]
TODAY = date(2026, 11, 30)
ADULT, CHILD = 1, 2


def _need(name: str, on: date = date(2026, 3, 1)) -> Evidence:
    return Evidence(f"a-{name}", ADULT, name, on, "council-assessment")


def _report(
    indicator: str, on: date, *, person: int = ADULT, flag: bool | None = None, percent: float | None = None,
    n: str = "",
) -> Evidence:  # fmt: skip
    return Evidence(f"{indicator}-{on}-{n}", person, indicator, on, "police-prevention", flag, percent)


def test_the_needs_a_rule_may_name_are_the_assessments_columns() -> None:
    assert tuple(name for name, _ in OUTCOMES) == ASSESSMENT_NEEDS


def test_the_rule_in_force_changes_on_the_first_of_october_2022() -> None:
    assert rule_in_force(RULES, date(2022, 9, 30)).id == "supporting-families-2015"
    assert rule_in_force(RULES, date(2022, 10, 1)).id == "supporting-families-2022"
    with pytest.raises(LookupError):
        rule_in_force(RULES, date(2015, 3, 31))


@pytest.mark.parametrize(
    ("needs", "eligible_2022", "eligible_2015"),
    [
        ((), False, False),
        (("need_housing",), False, False),
        (("need_housing", "need_health"), False, False),  # housing was not one of the six problems
        (("need_domestic_abuse", "need_health"), False, True),  # two problems were enough before 2022
        (("need_housing", "need_early_years"), False, False),  # neither was one of the six problems
        (("need_housing", "need_health", "need_education"), True, True),
        (tuple(ASSESSMENT_NEEDS), True, True),
    ],
)
def test_both_rules_as_tables_of_assessed_needs(
    needs: tuple[str, ...], eligible_2022: bool, eligible_2015: bool
) -> None:
    evidence = [_need(name, date(2021, 3, 1)) for name in needs]
    assert evaluate(NOW, evidence, TODAY).eligible is eligible_2022
    assert evaluate(BEFORE, evidence, date(2021, 6, 1)).eligible is eligible_2015
    # An assessment dated after the day judged is not evidence on that day.
    assert not evaluate(BEFORE, [_need(name, date(2021, 6, 2)) for name in needs], date(2021, 6, 1)).met


@pytest.mark.parametrize(
    ("offence", "today", "counts"),
    [
        (date(2025, 12, 1), date(2026, 11, 30), True),  # the last day of its twelve months
        (date(2025, 12, 1), date(2026, 12, 1), False),  # its anniversary: aged out
        (date(2026, 11, 30), date(2026, 11, 30), True),  # the day itself
        (date(2026, 12, 1), date(2026, 11, 30), False),  # dated tomorrow: does not count yet
        (date(2024, 2, 29), date(2025, 2, 27), True),  # 29 February: twelve months end on 28 February
        (date(2024, 2, 29), date(2025, 2, 28), False),
    ],
)
def test_an_offence_counts_for_twelve_months_to_the_day(offence: date, today: date, counts: bool) -> None:
    earlier = date(2020, 1, 1)
    evidence = [
        _need("need_housing", earlier),
        _need("need_health", earlier),
        _report("proven_offence", offence),
    ]
    result = evaluate(NOW, evidence, today)
    crime = next(o for o in result.outcomes if o.key == "crime_prevention")
    assert (crime.met, result.eligible) == (counts, counts)
    if counts:
        assert [e.indicator for e in crime.evidence] == ["proven_offence"]
        assert result.since == offence  # the third outcome was met on the offence's day


def test_attendance_is_judged_on_the_latest_term_reported() -> None:
    spring, summer = date(2026, 3, 27), date(2026, 7, 22)
    base = [_need("need_housing"), _need("need_health")]
    low_then_fine = [_report("school_attendance", spring, person=CHILD, percent=84.0),
                     _report("school_attendance", summer, person=CHILD, percent=96.5)]  # fmt: skip
    assert not evaluate(NOW, base + low_then_fine, TODAY).eligible
    fine_then_low = [_report("school_attendance", spring, person=CHILD, percent=96.5),
                     _report("school_attendance", summer, person=CHILD, percent=89.9)]  # fmt: skip
    result = evaluate(NOW, base + fine_then_low, TODAY)
    education = next(o for o in result.outcomes if o.key == "education")
    assert result.eligible and education.since == summer
    assert [e.percent for e in education.evidence] == [89.9]
    exactly_ninety = [_report("school_attendance", summer, person=CHILD, percent=90.0)]
    assert not evaluate(NOW, base + exactly_ninety, TODAY).eligible  # "below 90%"


def test_out_of_work_benefits_since_the_first_of_an_unbroken_run_of_reports() -> None:
    base = [_need("need_housing"), _need("need_health")]
    reports = [
        _report("out_of_work_benefits", date(2026, 1, 10), flag=True),
        _report("out_of_work_benefits", date(2026, 4, 10), flag=False),
        _report("out_of_work_benefits", date(2026, 6, 10), flag=True),
        _report("out_of_work_benefits", date(2026, 9, 10), flag=True),
    ]
    result = evaluate(NOW, base + reports, TODAY)
    money = next(o for o in result.outcomes if o.key == "financial_stability")
    assert money.met and money.since == date(2026, 6, 10)
    assert [e.observed_on for e in money.evidence] == [date(2026, 6, 10), date(2026, 9, 10)]
    stopped = [*reports, _report("out_of_work_benefits", date(2026, 11, 1), flag=False)]
    assert not evaluate(NOW, base + stopped, TODAY).eligible


def test_reports_that_disagree_on_one_day_are_kept_side_by_side_and_met_on_by_neither() -> None:
    base = [_need("need_housing"), _need("need_health")]
    day = date(2026, 10, 1)
    yes = _report("out_of_work_benefits", day, flag=True, n="a")
    no = _report("out_of_work_benefits", day, flag=False, n="b")
    result = evaluate(NOW, [*base, yes, no], TODAY)
    money = next(o for o in result.outcomes if o.key == "financial_stability")
    assert not money.met and not result.eligible
    assert set(money.conflicts) == {yes, no}
    # The assessor's own record is a fact of the council's: a conflict among partners does not undo it.
    assessed = evaluate(NOW, [*base, yes, no, _need("need_financial_stability")], TODAY)
    assert assessed.eligible and set(
        next(o for o in assessed.outcomes if o.key == "financial_stability").conflicts
    ) == {yes, no}


def test_a_family_is_judged_on_every_members_evidence() -> None:
    evidence = [
        _need("need_housing"),
        _report("proven_offence", date(2026, 5, 1), person=CHILD),
        _report("out_of_work_benefits", date(2026, 9, 1), person=ADULT, flag=True),
    ]
    result = evaluate(NOW, evidence, TODAY)
    assert result.eligible and result.met == 3 and result.since == date(2026, 9, 1)
    assert [o.key for o in result.outcomes if o.met] == ["crime_prevention", "housing", "financial_stability"]


def test_the_timeline_says_when_a_family_moves_in_and_out_as_its_evidence_ages() -> None:
    base = [_need("need_housing", date(2026, 1, 5)), _need("need_health", date(2026, 1, 5))]
    evidence = [
        *base,
        _report("proven_offence", date(2026, 2, 1), person=CHILD),
        _report("antisocial_behaviour_intervention", date(2026, 12, 20), person=CHILD),  # reported ahead
    ]
    made = timeline(RULES, evidence, TODAY)
    # In from today (the offence made the third outcome), out on the offence's anniversary... except that
    # the intervention of 20 December keeps crime prevention met until its own anniversary.
    assert made.eligible == (Interval(TODAY, date(2027, 12, 20)),)
    assert made.criterion_met == (Interval(TODAY, None),)  # the assessed needs do not age
    # Without the intervention: out on 1 February 2027, and every day in between agrees with evaluate().
    alone = timeline(RULES, evidence[:3], TODAY)
    assert alone.eligible == (Interval(TODAY, date(2027, 2, 1)),)
    for day in (TODAY, date(2027, 1, 31), date(2027, 2, 1), date(2027, 6, 1)):
        assert any(i.covers(day) for i in alone.eligible) is evaluate(NOW, evidence[:3], day).eligible, day
    # Nothing at all: never in either population.
    assert timeline(RULES, [], TODAY) == type(made)(eligible=(), criterion_met=())


def test_add_months_keeps_the_day_or_takes_the_months_last() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2025, 12, 1), 12) == date(2026, 12, 1)


# -- the rule files --------------------------------------------------------------------------------


def _rule(tmp_path: Path, text: str, name: str = "test-rule") -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


GOOD = """id: test-rule
name: A test rule
source: nowhere
in_force: {from: 2030-01-01}
eligible_when: {outcomes_met_at_least: 1}
outcomes:
  crime:
    name: Crime
    met_by:
      - {indicator: proven_offence, within_months: 12}
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("{indicator: proven_offence, within_months: 12}", "{indicator: shoplifting, within_months: 12}",
         "10: outcomes.crime.met_by[0].indicator: expected one of: proven_offence, "
         "antisocial_behaviour_intervention, out_of_work_benefits, school_attendance"),
        ("within_months: 12}", "within_months: 12, below: 90}",
         "10: outcomes.crime.met_by[0]: proven_offence is an event: it happened, or not"),
        ("indicator: proven_offence,", "indicator: school_attendance,",
         "10: outcomes.crime.met_by[0]: school_attendance is a percentage: give 'below' (and not 'is')"),
        ("{indicator: proven_offence, within_months: 12}", "{indicator: proven_offence}",
         "10: outcomes.crime.met_by[0]: an indicator needs within_months"),
        ("indicator: proven_offence,", "assessment: need_crime_prevention,",
         "10: outcomes.crime.met_by[0].within_months: applies to indicators only"),
        ("outcomes_met_at_least: 1", "outcomes_met_at_least: 2",
         "5: eligible_when.outcomes_met_at_least: must be between 1 and 1"),
        ("id: test-rule", "id: another-rule", "1: id: must match the file name ('test-rule')"),
        ("in_force: {from: 2030-01-01}", "in_force: {from: 2030-01-01, until: 2029-01-01}",
         "4: in_force.until: is before 'from'"),
    ],
)  # fmt: skip
def test_a_bad_rule_file_is_refused_with_file_line_key_and_reason(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    with pytest.raises(EligibilityFileError) as caught:
        load_eligibility(_rule(tmp_path, GOOD.replace(old, new)))
    assert str(caught.value) == f"test-rule.yaml:{message}"


def test_two_rules_in_force_on_one_day_are_refused(tmp_path: Path) -> None:
    _rule(tmp_path, GOOD)
    _rule(
        tmp_path,
        GOOD.replace("id: test-rule", "id: later-rule").replace("2030-01-01", "2031-06-01"),
        "later-rule",
    )
    with pytest.raises(EligibilityFileError) as caught:
        load_eligibility(tmp_path)
    assert str(caught.value) == "test-rule.yaml: in_force: overlaps later-rule's dates"
    assert load_eligibility(
        _rule(tmp_path, GOOD.replace("{from: 2030-01-01}", "{from: 2030-01-01, until: 2031-05-31}"))
    )
