"""Data-sharing agreements: one YAML file each, read strictly into frozen dataclasses.

A file that is not exactly right stops start-up with `AgreementFileError`, which names the file,
the line, the key and the reason. Nothing here touches a database, the network or the clock.

Exceptions:
    AgreementFileError      a file is malformed or inconsistent (file, line, key, reason)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal

from policies._yaml import PolicyFileError, Value, YamlShapeError, compose
from policies.access import ACCESS_KEYS, Access, parse_access
from policies.console import ConsoleReaders, parse_console
from policies.contributions import CONTRIBUTIONS
from policies.fields import (
    COUNTABLE_FIELDS,
    DERIVED_FIELDS,
    FIELDS_BY_NAME,
    LEDGER_FIELDS_BY_NAME,
    LOCATION_FIELDS,
    MATCHABLE_FIELDS,
)
from policies.populations import LEDGER_POPULATION, POPULATIONS, is_known_population

AGREEMENTS_DIR: Final[Path] = Path(__file__).parent / "agreements"

ProtectedAddressRule = Literal["withhold", "exclude"]
ContextRequirement = Literal["acting_user", "case_reference"]
LookupMode = Literal["single_match"]

_ID_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_TOP_KEYS = frozenset(
    {
        "id",
        "version",
        "partner",
        "purpose",
        "lawful_basis",
        "effective",
        "review_due",
        "population",
        "fields",
        "match",
        "listing",
        "honours_objection",
        "protected_address",
        "break_glass",
        "requires",
        "limits",
        "introspection",
        "console",
        "counts",
        "contributes",
    }
    | ACCESS_KEYS
)
_OPTIONAL_TOP_KEYS = (
    frozenset(
        {
            "match",
            "break_glass",
            "requires",
            "limits",
            "honours_objection",
            "protected_address",
            "console",
            "counts",
            "contributes",
        }
    )
    | ACCESS_KEYS
)
_REQUIRED_TOP_KEYS = _TOP_KEYS - _OPTIONAL_TOP_KEYS
# Keys about people, required for a person population and meaningless for the access ledger.
_PERSON_ONLY_KEYS = (
    "honours_objection",
    "protected_address",
    "match",
    "break_glass",
    "counts",
    "contributes",
)
# Keys about the access ledger only.
_LEDGER_ONLY_KEYS = ("console",)
# Bounds a per-agreement limit may take: (minimum, maximum).
_NUMERIC_LIMITS: Final = {
    "people_per_request": (1, 5_000),
    "people_per_day": (1, 10_000_000),
    "requests_per_second": (1, 1_000),
    "requests_per_minute": (1, 60_000),
    "max_depth": (2, 20),
    "max_fields": (1, 2_000),
    "max_aliases": (0, 500),
}
_LIMIT_KEYS = frozenset({"max_page_size", "lookup", *_NUMERIC_LIMITS})
MAX_PAGE_SIZE_CEILING: Final = 500


class AgreementFileError(PolicyFileError):
    """An agreement file is not valid. `str()` reads `file:line: key: reason`."""


@dataclass(frozen=True, slots=True)
class Effective:
    start: date
    until: date


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client of the agreement may take. None: the gateway's default (its settings)."""

    max_page_size: int | None
    lookup: LookupMode | None
    people_per_request: int | None = None  # people a document may ask for: page sizes summed
    people_per_day: int | None = None  # distinct people disclosed to one client in a UK day
    requests_per_second: int | None = None
    requests_per_minute: int | None = None
    max_depth: int | None = None
    max_fields: int | None = None
    max_aliases: int | None = None


@dataclass(frozen=True, slots=True)
class Agreement:
    id: str
    version: int
    partner: str
    purpose: str
    lawful_basis: tuple[str, ...]
    effective: Effective
    review_due: date
    population: str
    fields: tuple[str, ...]
    match: tuple[str, ...]
    listing: bool
    honours_objection: bool
    protected_address: ProtectedAddressRule
    break_glass: bool
    requires: frozenset[ContextRequirement]
    limits: Limits
    introspection: bool
    access: Access
    source: str
    console: ConsoleReaders | None = None  # who may sign in to the security console (ledger only)
    # `peopleCounts` in the view, grouped by its countable fields, each count below this suppressed.
    counts_suppress_below: int | None = None
    # Mutations by which the partner reports indicators about people in its view (policies.contributions).
    contributes: tuple[str, ...] = ()
    text: str = field(default="", repr=False, compare=False)  # the file as reviewed, for its version history

    @property
    def label(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def is_ledger(self) -> bool:
        """An agreement over the gateway's access ledger rather than over person records."""
        return self.population == LEDGER_POPULATION


def load_agreements(directory: Path = AGREEMENTS_DIR) -> dict[str, Agreement]:
    """Read every `*.yaml` in `directory`. The file name must be the agreement id."""
    for stray in sorted(directory.glob("*.yml")):
        # A file that would silently not load is a surprise in review: refuse it instead.
        raise AgreementFileError(stray.name, None, "", "agreement files must end in .yaml")
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise AgreementFileError(str(directory), None, "", "no agreement files (*.yaml) found")
    agreements: dict[str, Agreement] = {}
    for path in paths:
        agreement = parse_agreement(path.read_text(encoding="utf-8"), source=path.name, expected_id=path.stem)
        agreements[agreement.id] = agreement
    return agreements


def parse_agreement(text: str, *, source: str, expected_id: str | None = None) -> Agreement:
    try:
        return replace(_parse(compose(text), source, expected_id), text=text)
    except YamlShapeError as error:
        raise AgreementFileError(source, error.line, error.key, error.reason) from None


def _parse(root: Value, source: str, expected_id: str | None) -> Agreement:
    top = root.mapping(allowed=_TOP_KEYS, required=_REQUIRED_TOP_KEYS)

    agreement_id = top["id"].text()
    if not _ID_RE.match(agreement_id) or len(agreement_id) > 64:
        raise top["id"].fail("lower-case words joined by '-', at most 64 characters")
    if expected_id is not None and agreement_id != expected_id:
        raise top["id"].fail(f"must match the file name ('{expected_id}')")

    effective_map = top["effective"].mapping(
        allowed=frozenset({"from", "until"}), required=frozenset({"from", "until"})
    )
    effective = Effective(start=effective_map["from"].day(), until=effective_map["until"].day())
    if effective.until < effective.start:
        raise effective_map["until"].fail("must not be before 'from'")

    review_due = top["review_due"].day()
    if not effective.start <= review_due:
        raise top["review_due"].fail("must not be before effective.from")

    population = top["population"].text()
    if not is_known_population(population):
        known = ", ".join(sorted([*POPULATIONS, LEDGER_POPULATION]))
        raise top["population"].fail(f"unknown population (known: {known})")
    # What every agreement states, whatever it is about.
    common: dict[str, Any] = {
        "id": agreement_id,
        "version": top["version"].integer(minimum=1, maximum=1_000_000),
        "partner": top["partner"].text(),
        "purpose": " ".join(top["purpose"].text().split()),
        "lawful_basis": _lawful_basis(top),
        "effective": effective,
        "review_due": review_due,
        "introspection": top["introspection"].boolean(),
        "access": parse_access(top, requires_acting_user="acting_user" in _requirements(top)),
        "source": source,
    }
    if population == LEDGER_POPULATION:
        return _parse_ledger(top, common)
    for key in _LEDGER_ONLY_KEYS:
        if key in top:
            raise top[key].fail("applies to the access ledger only")
    missing = [key for key in ("honours_objection", "protected_address") if key not in top]
    if missing:
        raise top["population"].fail(f"a person population needs {' and '.join(missing)}")

    fields = _field_names(top["fields"], allowed=frozenset(FIELDS_BY_NAME), what="field")
    if not fields:
        raise top["fields"].fail("an agreement must disclose at least one field")
    for derived, raw in DERIVED_FIELDS.items():
        if derived in fields and raw in fields:
            # A minimised value next to the value it minimises minimises nothing: say so in review.
            raise top["fields"].fail(f"'{derived}' is derived from '{raw}': name one or the other")
    match = (
        _field_names(top["match"], allowed=MATCHABLE_FIELDS, what="match field", within=fields)
        if "match" in top
        else ()
    )

    limits = _limits(top["limits"]) if "limits" in top else Limits(max_page_size=None, lookup=None)
    listing = top["listing"].boolean()
    if listing and limits.max_page_size is None:
        raise top["listing"].fail("listing needs limits.max_page_size")
    if match and limits.lookup is None:
        raise top["match"].fail("match needs limits.lookup")
    if limits.lookup is not None and not match:
        raise top["limits"].fail("limits.lookup needs match fields")
    if not listing and not match:
        raise top["listing"].fail("with no listing and no match fields the view could reach no one")
    if listing and population == "all-records":
        raise top["listing"].fail(
            "population 'all-records' allows no listing: it is reached only through match"
        )

    protected_address: ProtectedAddressRule = "withhold"
    if top["protected_address"].word(choices=("withhold", "exclude")) == "exclude":
        protected_address = "exclude"
    break_glass = top["break_glass"].boolean() if "break_glass" in top else False
    if break_glass and protected_address != "withhold":
        raise top["break_glass"].fail("break-glass applies only where protected_address is 'withhold'")
    if protected_address == "withhold" and not break_glass:
        # A person listed with their location withheld is a person with a protected-address marker:
        # the view would tell its reader who lives in a refuge. Only break-glass (MASH) may see that.
        raise top["protected_address"].fail(
            "'withhold' would show which people have a protected address: use 'exclude' "
            "(withhold only with break_glass)"
        )
    if break_glass and not fields_reveal_location(fields):
        raise top["break_glass"].fail("break-glass is pointless without a location or contact field")

    requires = _requirements(top)
    if break_glass and requires != {"acting_user", "case_reference"}:
        raise top["break_glass"].fail("break-glass requires both acting_user and case_reference")
    if break_glass and not common["access"].verifies_officers:
        raise top["break_glass"].fail("break-glass needs a verified acting user (acting_user: verified)")

    return Agreement(
        **common,
        population=population,
        fields=fields,
        match=match,
        listing=listing,
        honours_objection=top["honours_objection"].boolean(),
        protected_address=protected_address,
        break_glass=break_glass,
        requires=requires,
        limits=limits,
        counts_suppress_below=_counts(top, fields, listing) if "counts" in top else None,
        contributes=_contributes(top["contributes"]) if "contributes" in top else (),
    )


def _contributes(value: Value) -> tuple[str, ...]:
    names: list[str] = []
    for item in value.words():
        name = item.word(choices=tuple(CONTRIBUTIONS))
        if name in names:
            raise item.fail("listed twice")
        names.append(name)
    if not names:
        raise value.fail("name at least one contribution, or leave the key out")
    return tuple(names)


def _counts(top: dict[str, Value], fields: tuple[str, ...], listing: bool) -> int:
    """`counts: {suppress_below: N}`: the view's `peopleCounts`, each count of fewer than N people
    suppressed (null), so that no count it is given singles anyone out."""
    settings = top["counts"].mapping(
        allowed=frozenset({"suppress_below"}), required=frozenset({"suppress_below"})
    )
    if not listing:
        raise top["counts"].fail("counts need listing: they count the people the listing reaches")
    if top["protected_address"].word(choices=("withhold", "exclude")) != "exclude":
        # A located count of people whose location is protected would place them.
        raise top["counts"].fail("counts need protected_address: exclude")
    if not any(name in COUNTABLE_FIELDS for name in fields):
        raise top["counts"].fail(f"counts need a countable field ({', '.join(COUNTABLE_FIELDS)})")
    return settings["suppress_below"].integer(minimum=2, maximum=100)


def _parse_ledger(top: dict[str, Value], common: dict[str, Any]) -> Agreement:
    for key in _PERSON_ONLY_KEYS:
        if key in top:
            raise top[key].fail("does not apply to the access ledger")
    fields = _field_names(top["fields"], allowed=frozenset(LEDGER_FIELDS_BY_NAME), what="ledger field")
    if not fields:
        raise top["fields"].fail("an agreement must disclose at least one field")
    limits = _limits(top["limits"]) if "limits" in top else Limits(max_page_size=None, lookup=None)
    if limits.lookup is not None:
        raise top["limits"].fail("limits.lookup does not apply to the access ledger")
    listing = top["listing"].boolean()
    if listing != ("auditEvents" in fields):
        raise top["listing"].fail("listing is true exactly when auditEvents is among the fields")
    if listing and limits.max_page_size is None:
        raise top["listing"].fail("listing needs limits.max_page_size")
    return Agreement(
        **common,
        population=LEDGER_POPULATION,
        fields=fields,
        match=(),
        listing=listing,
        honours_objection=False,
        protected_address="withhold",
        break_glass=False,
        requires=_requirements(top),
        limits=limits,
        console=parse_console(top["console"]) if "console" in top else None,
    )


def _requirements(top: dict[str, Value]) -> frozenset[ContextRequirement]:
    requires: set[ContextRequirement] = set()
    for item in top["requires"].words() if "requires" in top else ():
        word = item.word(choices=("acting_user", "case_reference"))
        if word in requires:
            raise item.fail("listed twice")
        requires.add("acting_user" if word == "acting_user" else "case_reference")
    return frozenset(requires)


def _lawful_basis(top: dict[str, Value]) -> tuple[str, ...]:
    lawful_basis = tuple(item.text() for item in top["lawful_basis"].words())
    if not lawful_basis:
        raise top["lawful_basis"].fail("at least one lawful basis is required")
    return lawful_basis


def _field_names(
    value: Value, *, allowed: frozenset[str], what: str, within: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    names: list[str] = []
    for item in value.words():
        name = item.text()
        if name not in allowed:
            raise item.fail(f"unknown {what} '{name}' (known: {', '.join(sorted(allowed))})")
        if name in names:
            raise item.fail(f"'{name}' is listed twice")
        if within is not None and name not in within:
            raise item.fail(
                f"'{name}' is not among the agreement's fields: a partner may only search on what it may see"
            )
        names.append(name)
    return tuple(names)


def _limits(value: Value) -> Limits:
    mapping = value.mapping(allowed=_LIMIT_KEYS, required=frozenset())
    max_page_size = (
        mapping["max_page_size"].integer(minimum=1, maximum=MAX_PAGE_SIZE_CEILING)
        if "max_page_size" in mapping
        else None
    )
    lookup: LookupMode | None = None
    if "lookup" in mapping:
        mapping["lookup"].word(choices=("single_match",))
        lookup = "single_match"
    numbers = {
        key: mapping[key].integer(minimum=low, maximum=high)
        for key, (low, high) in _NUMERIC_LIMITS.items()
        if key in mapping
    }
    limits = Limits(max_page_size=max_page_size, lookup=lookup, **numbers)
    if (
        limits.requests_per_second is not None
        and limits.requests_per_minute is not None
        and limits.requests_per_minute < limits.requests_per_second
    ):
        raise mapping["requests_per_minute"].fail("must not be below requests_per_second")
    if (
        limits.people_per_request is not None
        and max_page_size is not None
        and limits.people_per_request < max_page_size
    ):
        raise mapping["people_per_request"].fail("must not be below max_page_size: one full page must fit")
    return limits


def fields_reveal_location(fields: Iterable[str]) -> bool:
    return any(name in LOCATION_FIELDS for name in fields)
