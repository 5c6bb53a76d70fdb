"""Retention schedules as data: the shipped file, a strict loader, and the pure decision on one person
at the edges of its dates (the last day kept, the day after, 29 February, open records, holds)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from policies.retention import (
    LEGAL_HOLD,
    RETENTION_FILE,
    RetentionDecision,
    RetentionFileError,
    RetentionPolicy,
    RetentionTally,
    Verdict,
    add_years,
    decide,
    load_retention,
    parse_retention,
)

TODAY = date(2026, 11, 22)

GOOD = """\
schedules:
  supporting-families:
    notice: programme data kept one year after the programme ends
    counted_from: the end of the programme
    keep_years: 1
  youth-justice:
    notice: until the young person reaches 25
    counted_from: the date of birth
    keep_years: 25
holds:
  goddard-inquiry:
    notice: no children's records deleted
    covers: [youth-justice]
    in_force: true
"""


@pytest.fixture(scope="module")
def shipped() -> RetentionPolicy:
    return load_retention()


def _policy(text: str = GOOD) -> RetentionPolicy:
    return parse_retention(text, source="retention.yaml")


def test_the_shipped_file_carries_each_schedule_from_its_notice(shipped: RetentionPolicy) -> None:
    years = {name: schedule.keep_years for name, schedule in shipped.schedules.items()}
    assert years == {"supporting-families": 1, "family-hub": 6, "youth-justice": 25, "rescue-and-response": 7}
    assert "one year after the end of the programme" in shipped.schedules["supporting-families"].notice
    assert "six years from point of the last contact" in shipped.schedules["family-hub"].notice
    assert "reaches the age of 25" in shipped.schedules["youth-justice"].notice
    assert "seven years" in shipped.schedules["rescue-and-response"].notice
    goddard = shipped.holds["goddard-inquiry"]
    assert goddard.in_force
    assert goddard.covers == {"youth-justice", "rescue-and-response"}
    assert "no children's records should be deleted" in goddard.notice
    assert shipped.source == str(RETENTION_FILE)


def test_the_seeded_population_keeps_the_shipped_schedules() -> None:
    from resolvers.seeding import KEEP_YEARS

    assert {name: s.keep_years for name, s in load_retention().schedules.items()} == KEEP_YEARS


HOLD = "covers: [youth-justice]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("keep_years: 1", "keep_years: one"),
         r"^retention.yaml:5: schedules.supporting-families.keep_years: expected a whole number$"),
        (GOOD.replace("keep_years: 1", "keep_years: 0"), r":5: .*keep_years: must be between 1 and 100"),
        (GOOD.replace("    keep_years: 1\n", "    keep_years: 1\n    keep_months: 3\n"),
         r":6: schedules.supporting-families.keep_months: unknown key \(known keys: counted_from, "),
        (GOOD.replace("    counted_from: the end of the programme\n", ""),
         r"schedules.supporting-families.counted_from: missing required key"),
        (GOOD.replace(HOLD, "covers: [youth-justice, family-hub]"),
         r":13: holds.goddard-inquiry.covers\[1\]: unknown record class 'family-hub' \(known: "
         r"supporting-families, youth-justice\)"),
        (GOOD.replace(HOLD, "covers: []"), r"covers: a hold covers at least one record class"),
        (GOOD.replace(HOLD, "covers: [youth-justice, youth-justice]"), r"listed twice"),
        (GOOD.replace(HOLD, "covers: youth-justice"), r"covers: expected a list"),
        (GOOD.replace("in_force: true", "in_force: yes"),
         r"holds.goddard-inquiry.in_force: expected true or false"),
        (GOOD.replace("goddard-inquiry:", "legal-hold:"),
         r":11: holds.legal-hold: 'legal-hold' is the person's own legal hold flag"),
        (GOOD.replace("youth-justice:\n", "Youth_Justice:\n"), r"schedules.Youth_Justice: an id"),
        (GOOD + "retention: forever\n", r"retention: unknown key \(known keys: holds, schedules\)"),
        (GOOD.replace("  youth-justice:\n    notice: until", "  supporting-families:\n    notice: until"),
         r":6: schedules.supporting-families: duplicate key"),
        ("schedules: {}\n", r"schedules: at least one record class"),
        ("schedules: [a, b]\n", r"schedules: expected a mapping of ids to entries"),
        ("holds: {}\n", r"missing required key\(s\): schedules"),
        ("", r"the file is empty"),
        ("schedules: {a: [\n", r"not valid YAML"),
        (GOOD.replace("keep_years: 1", "keep_years: " + "9" * 5000),
         r":5: .*keep_years: must be between 1 and 100"),
        ("schedules:\x00 {}\n", r"^retention.yaml: \(file\): not valid YAML: [^\n]*$"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_line_key_and_reason(text: str, message: str) -> None:
    with pytest.raises(RetentionFileError, match=message):
        _policy(text)


def test_a_missing_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RetentionFileError, match=r"nowhere.yaml: \(file\): cannot be read \(No such file"):
        load_retention(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(
    ("day", "years", "expected"),
    [
        (date(2020, 2, 29), 1, date(2021, 3, 1)),  # no 29 February: the later day, never the earlier
        (date(2020, 2, 29), 4, date(2024, 2, 29)),
        (date(2019, 2, 28), 1, date(2020, 2, 28)),
        (date(2019, 3, 1), 25, date(2044, 3, 1)),
        (date(2025, 12, 31), 6, date(2031, 12, 31)),
        (date(9999, 12, 31), 6, date.max),  # a "never" date: beyond the calendar is never reached
        (date(9996, 2, 29), 7, date.max),
    ],
)
def test_years_are_added_by_the_calendar(day: date, years: int, expected: date) -> None:
    assert add_years(day, years) == expected


def _decide(
    *records: tuple[str, date | None], legal_hold: bool = False, today: date = TODAY, policy: RetentionPolicy
) -> RetentionDecision:
    return decide(records, legal_hold=legal_hold, today=today, policy=policy)


def test_the_last_day_of_retention_is_kept_and_the_day_after_is_due(shipped: RetentionPolicy) -> None:
    ended = TODAY.replace(year=TODAY.year - 1)  # the programme ended a year ago today
    on_the_day = _decide(("supporting-families", ended), policy=shipped)
    assert on_the_day == RetentionDecision(Verdict.KEPT, "supporting-families", TODAY)
    after = _decide(("supporting-families", ended - timedelta(days=1)), policy=shipped)
    assert after == RetentionDecision(Verdict.DUE, "supporting-families", TODAY - timedelta(days=1))
    assert after.is_due and not on_the_day.is_due


def test_a_record_from_29_february_is_kept_through_28_february_and_due_from_2_march(
    shipped: RetentionPolicy,
) -> None:
    leap = date(2024, 2, 29)
    record = ("supporting-families", leap)
    assert _decide(record, today=date(2025, 2, 28), policy=shipped).verdict is Verdict.KEPT
    assert _decide(record, today=date(2025, 3, 1), policy=shipped).verdict is Verdict.KEPT
    assert _decide(record, today=date(2025, 3, 2), policy=shipped).verdict is Verdict.DUE
    # A young person born on 29 February reaches 25 on 1 March in a common year.
    born = ("youth-justice", date(2004, 2, 29))
    assert _decide(born, today=date(2029, 3, 1), policy=shipped).kept_until == date(2029, 3, 1)
    assert _decide(born, today=date(2029, 3, 2), policy=shipped).verdict is Verdict.HELD  # Goddard


def test_a_person_whose_own_retention_date_is_later_is_kept_until_that_date(shipped: RetentionPolicy) -> None:
    """The views show a person up to their own retention date: the purge never takes one they still show."""
    record = [("family-hub", date(2015, 1, 1))]  # due by the schedule since 2021
    kept = decide(record, legal_hold=False, today=TODAY, policy=shipped, retention_until=TODAY)
    assert kept == RetentionDecision(Verdict.KEPT, "family-hub", TODAY)
    yesterday = TODAY - timedelta(days=1)
    later = decide(record, legal_hold=False, today=TODAY, policy=shipped, retention_until=yesterday)
    assert later == RetentionDecision(Verdict.DUE, "family-hub", yesterday)
    earlier = decide(record, legal_hold=False, today=TODAY, policy=shipped, retention_until=date(2016, 1, 1))
    assert earlier.kept_until == date(2021, 1, 1)  # an earlier own date does not shorten the schedule


def test_the_latest_record_decides_and_names_its_schedule(shipped: RetentionPolicy) -> None:
    # The programme ended three years ago (its year is long past), the last Family Hub contact was two
    # years ago (four years to go): the Family Hub record keeps the person.
    decision = _decide(
        ("supporting-families", date(2023, 11, 1)), ("family-hub", date(2024, 11, 1)), policy=shipped
    )
    assert decision == RetentionDecision(Verdict.KEPT, "family-hub", date(2030, 11, 1))
    gone = _decide(
        ("supporting-families", date(2020, 1, 5)), ("family-hub", date(2020, 1, 5)), policy=shipped
    )
    assert (gone.verdict, gone.schedule, gone.kept_until) == (Verdict.DUE, "family-hub", date(2026, 1, 5))


def test_a_record_dated_never_keeps_its_person_and_stops_no_one_else(shipped: RetentionPolicy) -> None:
    assert not _decide(("family-hub", date(9999, 12, 31)), policy=shipped).is_due
    assert _decide(("family-hub", date(2001, 1, 1)), policy=shipped).is_due


def test_an_open_record_is_never_due_however_old_the_others(shipped: RetentionPolicy) -> None:
    decision = _decide(("family-hub", date(1990, 1, 1)), ("supporting-families", None), policy=shipped)
    assert decision == RetentionDecision(Verdict.KEPT, "supporting-families", None)
    assert not _decide(("family-hub", date(1990, 1, 1)), ("family-hub-2", None), policy=_policy()).is_due


def test_no_record_or_a_class_without_schedule_is_unclassified_and_never_due(
    shipped: RetentionPolicy,
) -> None:
    assert _decide(policy=shipped) == RetentionDecision(Verdict.UNCLASSIFIED, None, None)
    unknown = _decide(("family-hub", date(1990, 1, 1)), ("send", date(1990, 1, 1)), policy=shipped)
    assert unknown == RetentionDecision(Verdict.UNCLASSIFIED, None, None, unscheduled=("send",))


def test_a_person_past_retention_on_legal_hold_is_held_never_due(shipped: RetentionPolicy) -> None:
    decision = _decide(("family-hub", date(2010, 6, 1)), legal_hold=True, policy=shipped)
    assert decision == RetentionDecision(Verdict.HELD, "family-hub", date(2016, 6, 1), holds=(LEGAL_HOLD,))
    # The flag does nothing to a person not yet due: they are kept by their schedule.
    assert _decide(("family-hub", TODAY), legal_hold=True, policy=shipped).verdict is Verdict.KEPT


def test_the_goddard_hold_covers_a_person_with_any_childrens_record(shipped: RetentionPolicy) -> None:
    # Due on the Family Hub record, but the old youth justice record is a child's record: held.
    decision = _decide(
        ("family-hub", date(2015, 1, 1)), ("youth-justice", date(1990, 1, 1)), legal_hold=True, policy=shipped
    )
    assert decision == RetentionDecision(
        Verdict.HELD, "family-hub", date(2021, 1, 1), holds=(LEGAL_HOLD, "goddard-inquiry")
    )
    referral = _decide(("rescue-and-response", date(2012, 5, 5)), policy=shipped)
    assert referral.holds == ("goddard-inquiry",)


def test_a_hold_no_longer_in_force_holds_nobody() -> None:
    lifted = _policy(GOOD.replace("in_force: true", "in_force: false"))
    assert _decide(("youth-justice", date(1990, 1, 1)), policy=lifted).verdict is Verdict.DUE
    assert _decide(("youth-justice", date(1990, 1, 1)), policy=_policy()).verdict is Verdict.HELD


def test_the_tally_counts_per_schedule_and_hold_and_takes_a_decision_back(shipped: RetentionPolicy) -> None:
    tally = RetentionTally(shipped)
    due = _decide(("family-hub", date(2010, 1, 1)), policy=shipped)
    held = _decide(("youth-justice", date(1990, 1, 1)), legal_hold=True, policy=shipped)
    for decision in (due, held, _decide(policy=shipped), _decide(("family-hub", None), policy=shipped)):
        tally.count(decision)
    tally.purged("family-hub")
    counted = tally.as_json()
    assert counted["schedules"]["family-hub"] == {"people": 2, "kept": 1, "due": 1, "held": 0, "purged": 1}
    assert counted["schedules"]["youth-justice"] == {"people": 1, "kept": 0, "due": 0, "held": 1, "purged": 0}
    assert counted["holds"] == {LEGAL_HOLD: 1, "goddard-inquiry": 1}
    assert (counted["people"], counted["unclassified"]["people"], counted["due"]) == (4, 1, 1)
    tally.uncount(held)
    assert tally.as_json()["holds"] == {LEGAL_HOLD: 0, "goddard-inquiry": 0}
    assert list(counted["schedules"]) == list(shipped.schedules)  # the file's order
