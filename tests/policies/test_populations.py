"""A population named in `policies` must have a WHERE clause in `resolvers`, and the other way round."""

from __future__ import annotations

from policies.populations import POPULATIONS, is_known_population
from resolvers.scopes import POPULATION_CLAUSES


def test_every_population_has_a_sql_clause() -> None:
    assert set(POPULATIONS) - set(POPULATION_CLAUSES) == set()


def test_every_sql_clause_is_a_named_population() -> None:
    assert set(POPULATION_CLAUSES) - set(POPULATIONS) == set()


def test_unknown_population_is_not_known() -> None:
    assert [name for name in POPULATIONS if not is_known_population(name)] == []
    assert is_known_population("everyone") is False
