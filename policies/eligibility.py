"""Programme eligibility as data (`policies/eligibility/*.yaml`) and the pure evaluator of one family.

A rule names its outcomes (the programme from October 2022: ten; before it: six problems), how many
must be met for a family to be eligible, and, for each outcome, what meets it: a need the council's
assessor recorded, or an indicator partners report, within a time window (a proven offence within the
last 12 months; school attendance below 90% in the latest term reported). Nothing here reads a
database, the environment or the clock: the caller passes the family's evidence and the day.

An indicator's evidence counts from its own date up to the day before the window's anniversary (an
offence on 2025-12-01 counts within 12 months through 2026-11-30). Evidence dated after the day judged
does not count yet. Two reports of one indicator for one person on one day that disagree are a conflict:
both are kept, the outcome is not met on them, and the explanation says so.

Exceptions:
    EligibilityFileError    a rule file is malformed or inconsistent (file, line, key, reason)
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final, Literal

from policies._yaml import PolicyFileError, Value, YamlShapeError, compose

ELIGIBILITY_DIR: Final[Path] = Path(__file__).parent / "eligibility"
MAX_WINDOW_MONTHS: Final = 120

# The needs an assessor records (resolvers.models.OUTCOMES; a test holds the two lists to one).
ASSESSMENT_NEEDS: Final[tuple[str, ...]] = (
    "need_education", "need_early_years", "need_health", "need_substance_use", "need_family_relationships",
    "need_safe_from_exploitation", "need_crime_prevention", "need_domestic_abuse", "need_housing",
    "need_financial_stability",
)  # fmt: skip

IndicatorKind = Literal["event", "flag", "percent"]
# What partners report about a person, and what each report carries besides its date.
INDICATORS: Final[dict[str, IndicatorKind]] = {
    "proven_offence": "event",  # the date of the offence proven (police)
    "antisocial_behaviour_intervention": "event",  # the date of the intervention (police)
    "out_of_work_benefits": "flag",  # receiving them or not, as of the date (DWP)
    "school_attendance": "percent",  # attendance in a term, dated the term's last day (schools)
}

_ID_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_KEYS = frozenset({"id", "name", "source", "in_force", "eligible_when", "outcomes"})
_CONDITION_KEYS = frozenset({"assessment", "indicator", "within_months", "below", "is", "latest"})


class EligibilityFileError(PolicyFileError):
    """A rule file is not valid. `str()` reads `file:line: key: reason`."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One fact about one person: a report by a partner, or a need the council's assessor recorded."""

    evidence_id: str
    person_id: int
    indicator: str  # an INDICATORS name, or an ASSESSMENT_NEEDS name for the assessor's record
    observed_on: date  # the event, the as-of date, the term's end, the assessment
    source: str  # the agreement it came under, or "council-assessment"
    flag: bool | None = None  # out_of_work_benefits
    percent: float | None = None  # school_attendance


@dataclass(frozen=True, slots=True)
class Condition:
    """What meets an outcome: an assessed need, or an indicator (with its window and test)."""

    assessment: str | None = None
    indicator: str | None = None
    within_months: int | None = None
    below: float | None = None  # percent indicators: met below this
    is_: bool | None = None  # flag indicators: met when the flag is this
    latest: bool = False  # only each person's latest report in the window decides

    def describe(self) -> str:
        if self.assessment is not None:
            return f"the assessor recorded {self.assessment}"
        test = f" below {self.below:g}%" if self.below is not None else ""
        test += f" = {str(self.is_).lower()}" if self.is_ is not None else ""
        latest = "the latest " if self.latest else ""
        return f"{latest}{self.indicator}{test} within {self.within_months} months"


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    name: str
    met_by: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class EligibilityRule:
    id: str
    name: str
    source: str
    start: date
    until: date | None
    threshold: int  # outcomes met at least
    outcomes: tuple[Outcome, ...]

    def in_force_on(self, day: date) -> bool:
        return self.start <= day and (self.until is None or day <= self.until)


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    key: str
    name: str
    met: bool
    since: date | None  # from when, on the evidence it is met on now
    evidence: tuple[Evidence, ...]  # what it is met on (or what was looked at and fell short)
    conflicts: tuple[Evidence, ...] = ()  # reports that disagree with one another on the same day


@dataclass(frozen=True, slots=True)
class Eligibility:
    rule: str
    eligible: bool
    met: int
    threshold: int
    since: date | None  # the day the last outcome needed was met on the evidence of today
    outcomes: tuple[OutcomeResult, ...]


# -- evaluating ------------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` later; a day the month lacks becomes its last (31 Jan + 1 = 28/29 Feb)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def counts_on(observed_on: date, within_months: int, today: date) -> bool:
    """Within the window on `today`: not in the future, and `today` before its anniversary."""
    return observed_on <= today < add_months(observed_on, within_months)


def evaluate(rule: EligibilityRule, evidence: Iterable[Evidence], today: date) -> Eligibility:
    """Whether the family whose `evidence` this is (every member's, and the assessor's needs) is eligible
    under `rule` on `today`, which outcomes are met, on what, and since when."""
    facts = tuple(evidence)
    results = tuple(_outcome(outcome, facts, today) for outcome in rule.outcomes)
    met = sorted(r.since for r in results if r.met and r.since is not None)
    eligible = len(met) >= rule.threshold
    return Eligibility(
        rule=rule.id,
        eligible=eligible,
        met=len(met),
        threshold=rule.threshold,
        since=met[rule.threshold - 1] if eligible else None,
        outcomes=results,
    )


def _outcome(outcome: Outcome, facts: Sequence[Evidence], today: date) -> OutcomeResult:
    used: list[Evidence] = []
    conflicts: list[Evidence] = []
    since: list[date] = []
    for condition in outcome.met_by:
        met_on, disputed = _condition(condition, facts, today)
        conflicts += [c for c in disputed if c not in conflicts]
        if met_on:
            used += [e for e in met_on if e not in used]
            since.append(min(e.observed_on for e in met_on))
    return OutcomeResult(
        key=outcome.key,
        name=outcome.name,
        met=bool(used),
        since=min(since) if since else None,
        evidence=tuple(sorted(used, key=_order)),
        conflicts=tuple(sorted(conflicts, key=_order)),
    )


def _order(e: Evidence) -> tuple[date, str, str]:
    return (e.observed_on, e.indicator, e.evidence_id)


def _condition(
    condition: Condition, facts: Sequence[Evidence], today: date
) -> tuple[list[Evidence], list[Evidence]]:
    """The evidence that meets the condition on `today` (empty: not met), and any conflicts met."""
    if condition.assessment is not None:
        return [e for e in facts if e.indicator == condition.assessment and e.observed_on <= today], []
    assert condition.indicator is not None and condition.within_months is not None
    window = [
        e
        for e in facts
        if e.indicator == condition.indicator and counts_on(e.observed_on, condition.within_months, today)
    ]
    by_person: dict[int, dict[date, list[Evidence]]] = {}
    for e in window:
        by_person.setdefault(e.person_id, {}).setdefault(e.observed_on, []).append(e)
    met: list[Evidence] = []
    disputed: list[Evidence] = []
    for days in by_person.values():
        # Each day's reports: all pass, all fail, or disagree (a conflict: kept, shown, not met on).
        verdicts: list[tuple[date, bool | None]] = []
        for day in sorted(days):
            passing = [r for r in days[day] if _passes(condition, r)]
            if passing and len(passing) < len(days[day]):
                disputed += days[day]
                verdicts.append((day, None))
            else:
                verdicts.append((day, bool(passing)))
        if condition.latest:
            # The latest day decides; met on the run of days that say so up to it.
            run: list[Evidence] = []
            for day, verdict in reversed(verdicts):
                if verdict is not True:
                    break
                run += days[day]
            met += run
        else:
            met += [r for day, verdict in verdicts if verdict for r in days[day]]
    return met, disputed


def _passes(condition: Condition, report: Evidence) -> bool:
    if condition.below is not None:
        return report.percent is not None and report.percent < condition.below
    if condition.is_ is not None:
        return report.flag is condition.is_
    return True  # an event: that it happened


@dataclass(frozen=True, slots=True)
class Interval:
    """Days from `start` up to, not including, `until` (None: no end the evidence foresees)."""

    start: date
    until: date | None

    def covers(self, day: date) -> bool:
        return self.start <= day and (self.until is None or day < self.until)


@dataclass(frozen=True, slots=True)
class Timeline:
    """When, from `start` on, the family is eligible, and when it meets at least one outcome (the DWP's
    criterion), on the evidence held now: evidence only ages, so these change only when evidence or a
    rule is added."""

    eligible: tuple[Interval, ...]
    criterion_met: tuple[Interval, ...]


def timeline(rules: Mapping[str, EligibilityRule], evidence: Iterable[Evidence], start: date) -> Timeline:
    """Evaluate on every day the answer could change (a report's date, its window's anniversary, a
    rule's first and last day) from `start` on, and join the days into intervals."""
    facts = tuple(evidence)
    windows: dict[str, set[int]] = {}
    for rule in rules.values():
        for outcome in rule.outcomes:
            for condition in outcome.met_by:
                if condition.indicator is not None and condition.within_months is not None:
                    windows.setdefault(condition.indicator, set()).add(condition.within_months)
    points = {start}
    for e in facts:
        points.add(e.observed_on)
        points.update(add_months(e.observed_on, months) for months in windows.get(e.indicator, ()))
    for rule in rules.values():
        points.add(rule.start)
        if rule.until is not None:
            points.add(rule.until + timedelta(days=1))
    eligible: list[tuple[date, bool]] = []
    criterion: list[tuple[date, bool]] = []
    for day in sorted(p for p in points if p >= start):
        try:
            rule = rule_in_force(rules, day)
        except LookupError:
            eligible.append((day, False))
            criterion.append((day, False))
            continue
        result = evaluate(rule, facts, day)
        eligible.append((day, result.eligible))
        criterion.append((day, result.met >= 1))
    return Timeline(eligible=_intervals(eligible), criterion_met=_intervals(criterion))


def _intervals(points: list[tuple[date, bool]]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    opened: date | None = None
    for day, on in points:
        if on and opened is None:
            opened = day
        elif not on and opened is not None:
            out.append(Interval(opened, day))
            opened = None
    if opened is not None:
        out.append(Interval(opened, None))
    return tuple(out)


def rule_in_force(rules: Mapping[str, EligibilityRule], day: date) -> EligibilityRule:
    """The programme rule that judges eligibility on `day`."""
    for rule in rules.values():
        if rule.in_force_on(day):
            return rule
    raise LookupError(f"no eligibility rule is in force on {day.isoformat()}")


# -- loading ---------------------------------------------------------------------------------------


def load_eligibility(directory: Path = ELIGIBILITY_DIR) -> dict[str, EligibilityRule]:
    """Every `*.yaml` in `directory` (the file name is the rule's id); no two in force on one day."""
    rules: dict[str, EligibilityRule] = {}
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise EligibilityFileError(str(directory), None, "", "no eligibility rules (*.yaml) found")
    for path in paths:
        try:
            rule = _parse(compose(path.read_text(encoding="utf-8")), path.stem)
        except YamlShapeError as error:
            raise EligibilityFileError(path.name, error.line, error.key, error.reason) from None
        for other in rules.values():
            if _overlap(rule, other):
                raise EligibilityFileError(path.name, None, "in_force", f"overlaps {other.id}'s dates")
        rules[rule.id] = rule
    return rules


def _overlap(a: EligibilityRule, b: EligibilityRule) -> bool:
    a_end, b_end = a.until or date.max, b.until or date.max
    return a.start <= b_end and b.start <= a_end


def _parse(root: Value, expected_id: str) -> EligibilityRule:
    top = root.mapping(allowed=_RULE_KEYS, required=_RULE_KEYS)
    rule_id = top["id"].text()
    if not _ID_RE.match(rule_id) or rule_id != expected_id:
        raise top["id"].fail(f"must match the file name ('{expected_id}')")
    dates = top["in_force"].mapping(allowed=frozenset({"from", "until"}), required=frozenset({"from"}))
    start = dates["from"].day()
    until = dates["until"].day() if "until" in dates else None
    if until is not None and until < start:
        raise dates["until"].fail("is before 'from'")
    outcomes_map = top["outcomes"]
    if not isinstance(outcomes_map.node.value, list) or not outcomes_map.node.value:
        raise outcomes_map.fail("a rule needs at least one outcome")
    outcomes = tuple(
        _outcome_of(key, value)
        for key, value in outcomes_map.mapping(
            allowed=frozenset(_keys(outcomes_map)), required=frozenset()
        ).items()
    )
    when = top["eligible_when"].mapping(
        allowed=frozenset({"outcomes_met_at_least"}), required=frozenset({"outcomes_met_at_least"})
    )
    threshold = when["outcomes_met_at_least"].integer(minimum=1, maximum=len(outcomes))
    return EligibilityRule(
        id=rule_id, name=top["name"].text(), source=top["source"].text(), start=start, until=until,
        threshold=threshold, outcomes=outcomes,
    )  # fmt: skip


def _keys(value: Value) -> list[str]:
    """The keys as written (checked one by one below), so that `mapping` accepts them."""
    keys = []
    for key_node, _ in value.node.value:
        name = str(key_node.value)
        if not _KEY_RE.match(name):
            raise YamlShapeError(
                f"{value.key}.{name}", int(key_node.start_mark.line) + 1, "outcome keys are lower_case words"
            )
        keys.append(name)
    return keys


def _outcome_of(key: str, value: Value) -> Outcome:
    top = value.mapping(allowed=frozenset({"name", "met_by"}), required=frozenset({"name", "met_by"}))
    conditions = tuple(_condition_of(item) for item in top["met_by"].words())
    if not conditions:
        raise top["met_by"].fail("an outcome needs at least one way to be met")
    return Outcome(key=key, name=top["name"].text(), met_by=conditions)


def _condition_of(value: Value) -> Condition:
    top = value.mapping(allowed=_CONDITION_KEYS, required=frozenset())
    if ("assessment" in top) == ("indicator" in top):
        raise value.fail("a condition names either an assessment need or an indicator")
    if "assessment" in top:
        extra = sorted(set(top) - {"assessment"})
        if extra:
            raise top[extra[0]].fail("applies to indicators only")
        return Condition(assessment=top["assessment"].word(choices=ASSESSMENT_NEEDS))
    indicator = top["indicator"].word(choices=tuple(INDICATORS))
    kind = INDICATORS[indicator]
    if "within_months" not in top:
        raise value.fail("an indicator needs within_months")
    within = top["within_months"].integer(minimum=1, maximum=MAX_WINDOW_MONTHS)
    below = is_ = None
    if kind == "percent":
        if "below" not in top or "is" in top:
            raise value.fail(f"{indicator} is a percentage: give 'below' (and not 'is')")
        below = float(top["below"].integer(minimum=1, maximum=100))
    elif kind == "flag":
        if "is" not in top or "below" in top:
            raise value.fail(f"{indicator} is yes or no: give 'is' (and not 'below')")
        is_ = top["is"].boolean()
    elif "is" in top or "below" in top:
        raise value.fail(f"{indicator} is an event: it happened, or not")
    latest = top["latest"].boolean() if "latest" in top else False
    return Condition(indicator=indicator, within_months=within, below=below, is_=is_, latest=latest)
