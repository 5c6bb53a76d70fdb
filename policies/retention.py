"""Retention schedules as data (`policies/retention.yaml`) and the pure decision on one person.

Each class of record carries its schedule from the privacy notices: what its date counts from and how
many years it is kept. Holds stop a purge: a named hold covers record classes (the Goddard Inquiry's
restriction on children's records), and the person's own `legal_hold` flag is the built-in hold
`legal-hold`, always in force. Nothing here reads a database, the environment or the clock: the caller
passes `today`.

A person is decided as one of (`Verdict`):
    kept            a record is still open (no date yet), or the latest date (or the person's own
                    retention date, when that is later) has not passed
    unclassified    no record at all, or one of a class with no schedule: never purged, only counted
    held            past retention, but a hold applies (which ones are named)
    due             past retention and no hold: to be purged

Exceptions:
    RetentionFileError      the file is malformed or inconsistent (file, line, key, reason)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import yaml

from policies._yaml import PolicyFileError, Value, YamlShapeError, compose

RETENTION_FILE: Final[Path] = Path(__file__).parent / "retention.yaml"
LEGAL_HOLD: Final = "legal-hold"  # the person's own `legal_hold` flag, as a hold: always in force
MAX_KEEP_YEARS: Final = 100

_ID_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_SCHEDULE_KEYS = frozenset({"notice", "counted_from", "keep_years"})
_HOLD_KEYS = frozenset({"notice", "covers", "in_force"})


class RetentionFileError(PolicyFileError):
    """The retention file is not valid. `str()` reads `file:line: key: reason`."""


@dataclass(frozen=True, slots=True)
class Schedule:
    record_class: str
    notice: str
    counted_from: str  # in words: what the record's date is
    keep_years: int


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    notice: str
    covers: frozenset[str]  # record classes
    in_force: bool


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    schedules: Mapping[str, Schedule]
    holds: Mapping[str, Hold]
    source: str = ""


class Verdict(StrEnum):
    KEPT = "kept"
    UNCLASSIFIED = "unclassified"
    HELD = "held"
    DUE = "due"


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    verdict: Verdict
    schedule: str | None  # the record class whose schedule decided; None when unclassified
    kept_until: date | None  # the last day kept; None while a record is open, or when unclassified
    holds: tuple[str, ...] = ()  # the holds that stop the purge (held only)
    unscheduled: tuple[str, ...] = ()  # the person's record classes that have no schedule

    @property
    def is_due(self) -> bool:
        return self.verdict is Verdict.DUE


def load_retention(path: Path = RETENTION_FILE) -> RetentionPolicy:
    """Read the retention file; a missing or unreadable one is a `RetentionFileError` too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise RetentionFileError(str(path), None, "", f"cannot be read ({reason})") from None
    return parse_retention(text, source=str(path))


def parse_retention(text: str, *, source: str) -> RetentionPolicy:
    try:
        return _parse(compose(text), source)
    except YamlShapeError as error:
        raise RetentionFileError(source, error.line, error.key, error.reason) from None


def _parse(root: Value, source: str) -> RetentionPolicy:
    top = root.mapping(allowed=frozenset({"schedules", "holds"}), required=frozenset({"schedules"}))
    schedules: dict[str, Schedule] = {}
    for record_class, value in _entries(top["schedules"]).items():
        entry = value.mapping(allowed=_SCHEDULE_KEYS, required=_SCHEDULE_KEYS)
        schedules[record_class] = Schedule(
            record_class=record_class,
            notice=" ".join(entry["notice"].text().split()),
            counted_from=" ".join(entry["counted_from"].text().split()),
            keep_years=entry["keep_years"].integer(minimum=1, maximum=MAX_KEEP_YEARS),
        )
    if not schedules:
        raise top["schedules"].fail("at least one record class and its schedule")
    holds: dict[str, Hold] = {}
    reserved = {LEGAL_HOLD: f"'{LEGAL_HOLD}' is the person's own legal hold flag, built in: use another id"}
    for hold_id, value in (_entries(top["holds"], reserved=reserved) if "holds" in top else {}).items():
        entry = value.mapping(allowed=_HOLD_KEYS, required=_HOLD_KEYS)
        covers: set[str] = set()
        for item in entry["covers"].words():
            name = item.text()
            if name not in schedules:
                raise item.fail(f"unknown record class '{name}' (known: {', '.join(sorted(schedules))})")
            if name in covers:
                raise item.fail(f"'{name}' is listed twice")
            covers.add(name)
        if not covers:
            raise entry["covers"].fail("a hold covers at least one record class")
        holds[hold_id] = Hold(
            id=hold_id,
            notice=" ".join(entry["notice"].text().split()),
            covers=frozenset(covers),
            in_force=entry["in_force"].boolean(),
        )
    return RetentionPolicy(schedules=schedules, holds=holds, source=source)


def _entries(value: Value, *, reserved: Mapping[str, str] | None = None) -> dict[str, Value]:
    """A mapping keyed by ids (record classes, holds): lower-case words joined by '-'; an error names
    the line of the id itself."""
    if not isinstance(value.node, yaml.MappingNode):
        raise value.fail("expected a mapping of ids to entries")
    entries = value.mapping(
        allowed=frozenset(str(key.value) for key, _ in value.node.value), required=frozenset()
    )
    for key_node, _ in value.node.value:
        name = str(key_node.value)
        line = int(key_node.start_mark.line) + 1
        if not _ID_RE.match(name) or len(name) > 64:
            raise YamlShapeError(entries[name].key, line, "an id: lower-case words joined by '-', at most 64")
        if reserved and name in reserved:
            raise YamlShapeError(entries[name].key, line, reserved[name])
    return entries


def add_years(day: date, years: int) -> date:
    """The same calendar day `years` later; 29 February becomes 1 March in a common year, the later of
    the two candidates, so that a record is never purged before its full term has run."""
    if day.year + years > date.max.year:
        return date.max  # beyond the calendar (a "never" date such as 9999-12-31): never reached
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 3, 1)


def decide(
    records: Iterable[tuple[str, date | None]],
    *,
    legal_hold: bool,
    today: date,
    policy: RetentionPolicy,
    retention_until: date | None = None,
) -> RetentionDecision:
    """One person's fate today, from their records (record class, the date its schedule counts from,
    None while it is open), their own legal hold flag and, if given, their own retention date (the one
    every view obeys): a person the views may still show is never due, whatever the schedules say."""
    ordered = sorted(records, key=lambda record: (record[0], record[1] or date.max))
    if not ordered:
        return RetentionDecision(Verdict.UNCLASSIFIED, None, None)
    unscheduled = tuple(sorted({name for name, _ in ordered if name not in policy.schedules}))
    if unscheduled:
        # A schedule nobody wrote cannot be shown to have run out: counted, never purged.
        return RetentionDecision(Verdict.UNCLASSIFIED, None, None, unscheduled=unscheduled)
    still_open = [name for name, counted_from in ordered if counted_from is None]
    if still_open:
        return RetentionDecision(Verdict.KEPT, still_open[0], None)
    schedule, kept_until = None, date.min
    for name, counted_from in ordered:
        assert counted_from is not None
        until = add_years(counted_from, policy.schedules[name].keep_years)
        if until > kept_until:  # the first class, by id, of the latest date decides a tie
            schedule, kept_until = name, until
    if retention_until is not None and retention_until > kept_until:
        kept_until = retention_until  # kept longer by hand than the schedule says: not due before then
    if today <= kept_until:
        return RetentionDecision(Verdict.KEPT, schedule, kept_until)
    classes = {name for name, _ in ordered}
    holds = [LEGAL_HOLD] if legal_hold else []
    holds += [
        hold_id for hold_id, hold in sorted(policy.holds.items()) if hold.in_force and hold.covers & classes
    ]
    if holds:
        return RetentionDecision(Verdict.HELD, schedule, kept_until, holds=tuple(holds))
    return RetentionDecision(Verdict.DUE, schedule, kept_until)


@dataclass
class RetentionTally:
    """What a run decided, counted per schedule (people it decides: kept, due, held, purged), per hold
    (people it holds; a person under two holds counts under each) and unclassified. A decision can be
    taken back (`uncount`) when a person is decided again at the purge."""

    policy: RetentionPolicy
    schedules: dict[str, Counter[str]] = field(default_factory=dict)
    holds: Counter[str] = field(default_factory=Counter)
    unclassified: int = 0
    unscheduled: Counter[str] = field(default_factory=Counter)  # record class with no schedule -> people
    people: int = 0
    gone: int = 0  # due at the plan, no longer on record at the purge (removed meanwhile)

    def __post_init__(self) -> None:
        for name in self.policy.schedules:
            self.schedules.setdefault(name, Counter())

    def count(self, decision: RetentionDecision, *, sign: int = 1) -> None:
        self.people += sign
        if decision.verdict is Verdict.UNCLASSIFIED:
            self.unclassified += sign
            for name in decision.unscheduled:
                self.unscheduled[name] += sign
            return
        assert decision.schedule is not None
        row = self.schedules.setdefault(decision.schedule, Counter())
        row["people"] += sign
        row[decision.verdict.value] += sign
        for hold in decision.holds:
            self.holds[hold] += sign

    def uncount(self, decision: RetentionDecision) -> None:
        self.count(decision, sign=-1)

    def purged(self, schedule: str) -> None:
        self.schedules[schedule]["purged"] += 1

    def total(self, column: str) -> int:
        return sum(row[column] for row in self.schedules.values())

    def as_json(self) -> dict[str, Any]:
        columns = ("people", "kept", "due", "held", "purged")
        # In the file's order, the built-in hold first.
        holds = [LEGAL_HOLD, *self.policy.holds, *sorted(set(self.holds) - {LEGAL_HOLD, *self.policy.holds})]
        return {
            "people": self.people,
            "schedules": {
                name: {column: row[column] for column in columns} for name, row in self.schedules.items()
            },
            "holds": {hold: self.holds[hold] for hold in holds},
            "unclassified": {
                "people": self.unclassified,
                "classes_without_schedule": dict(sorted(self.unscheduled.items())),
            },
            "due": self.total("due"),
            "held": self.total("held"),
            "purged": self.total("purged"),
            "gone_since_plan": self.gone,
        }
