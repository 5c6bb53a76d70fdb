"""An event's hash is computed from what the standard library's JSON would write for it.

The ledger hashes each event's canonical JSON. Events written before orjson took over were hashed
from `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, and `gateway audit
verify` must still find every one of them intact; so, for every value a column can hold, the two
must agree byte for byte. The text a row is stored with takes a short cut for printable ASCII, which
must leave exactly what the full cleaning leaves.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.events import _LENGTHS, HASHED_COLUMNS, _stored, canonical_event, now_text

# Every value a stored column holds: text (never a lone surrogate: neither database can store one),
# a 64-bit integer, or null.
values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
)
rows = st.fixed_dictionaries(
    {name: values for name in HASHED_COLUMNS},
    optional={"officer_issuer": values, "request_count": values},
)
disclosures = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=2**62),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    ),
    max_size=8,
)


def reference(row: dict[str, Any], people: list[tuple[int, str]]) -> bytes:
    """The canonical form as events were first hashed."""
    return json.dumps(
        {
            "event": {
                **{name: row[name] for name in HASHED_COLUMNS},
                **{
                    name: row[name]
                    for name in ("officer_issuer", "request_count")
                    if row.get(name) is not None
                },
            },
            "disclosures": sorted([int(person_id), fields] for person_id, fields in people),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


@settings(max_examples=400, deadline=None)
@given(rows, disclosures)
def test_the_canonical_form_is_the_standard_librarys(
    row: dict[str, Any], people: list[tuple[int, str]]
) -> None:
    assert canonical_event(row, people) == reference(row, people)


def test_awkward_text_is_written_as_the_standard_library_writes_it() -> None:
    awkward = 'quote " backslash \\ tab \t newline \n nul \x00 del \x7f bell \x07 \u2028 \u00e9 \U0001f600 /'
    row = dict.fromkeys(HASHED_COLUMNS, awkward)
    assert canonical_event(row, [(1, awkward)]) == reference(row, [(1, awkward)])


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def full_cleaning(name: str, value: str) -> str:
    clean = _CONTROL.sub("", value)
    limit = _LENGTHS.get(name)
    clean = clean[:limit] if limit else clean
    return clean.encode("utf-8", "replace").decode("utf-8")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(HASHED_COLUMNS), st.text(max_size=300))
def test_stored_text_takes_its_short_cut_only_where_it_changes_nothing(name: str, value: str) -> None:
    assert _stored(name, value) == full_cleaning(name, value)


def test_the_short_cut_still_cuts_text_to_its_column() -> None:
    assert _LENGTHS["operation_name"] < 500
    assert _stored("operation_name", "A" * 500) == "A" * _LENGTHS["operation_name"]


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_the_time_an_event_is_stamped_with_is_written_as_strftime_writes_it(moment: datetime) -> None:
    with patch("gateway.audit.events.datetime") as clock:
        clock.now.return_value = moment
        assert now_text() == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
