"""A strict reader over PyYAML's node tree, so that every error can name its line.

`yaml.safe_load` would lose line numbers, keep the last of two duplicate keys without a word, read
`yes`/`no`/`on` as booleans and `2025-13-01` as a crash. Agreement files are short and reviewed by
people who do not write Python: we accept one plain spelling of each value and say exactly where a
file departs from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import yaml

_STR = "tag:yaml.org,2002:str"
_INT_RE = re.compile(r"^[0-9]+$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class PolicyFileError(Exception):
    """A policy file (an agreement, the retention schedules, an eligibility rule) is not valid.
    `str()` reads `file:line: key: reason`."""

    def __init__(self, file: str, line: int | None, key: str, reason: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key or '(file)'}: {reason}")


class YamlShapeError(Exception):
    """A value is not of the expected shape. Carries the line (1-based) and the dotted key."""

    def __init__(self, key: str, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Value:
    """One YAML node with the dotted key that reached it."""

    node: yaml.Node
    key: str

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def fail(self, reason: str) -> YamlShapeError:
        return YamlShapeError(self.key, self.line, reason)

    def mapping(self, *, allowed: frozenset[str], required: frozenset[str]) -> dict[str, Value]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail("expected a mapping of keys to values")
        out: dict[str, Value] = {}
        for key_node, value_node in self.node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                raise YamlShapeError(self.key, int(key_node.start_mark.line) + 1, "keys must be plain words")
            name = str(key_node.value)
            dotted = f"{self.key}.{name}" if self.key else name
            line = int(key_node.start_mark.line) + 1
            if name not in allowed:
                known = ", ".join(sorted(allowed))
                raise YamlShapeError(dotted, line, f"unknown key (known keys: {known})")
            if name in out:
                raise YamlShapeError(dotted, line, "duplicate key")
            out[name] = Value(value_node, dotted)
        missing = sorted(required - out.keys())
        if missing:
            first = f"{self.key}.{missing[0]}" if self.key else missing[0]
            raise YamlShapeError(first, self.line, f"missing required key(s): {', '.join(missing)}")
        return out

    def text(self) -> str:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _STR:
            raise self.fail("expected text")
        value = str(self.node.value).strip()
        if not value:
            raise self.fail("must not be empty")
        return value

    def integer(self, *, minimum: int, maximum: int) -> int:
        raw = self._plain_scalar()
        if not _INT_RE.match(raw):
            raise self.fail("expected a whole number")
        if len(raw.lstrip("0")) > len(str(maximum)):
            raise self.fail(f"must be between {minimum} and {maximum}")
        value = int(raw)
        if not minimum <= value <= maximum:
            raise self.fail(f"must be between {minimum} and {maximum}")
        return value

    def boolean(self) -> bool:
        raw = self._plain_scalar()
        if raw not in ("true", "false"):
            raise self.fail("expected true or false")
        return raw == "true"

    def day(self) -> date:
        raw = self._plain_scalar()
        if not _DATE_RE.match(raw):
            raise self.fail("expected a date written YYYY-MM-DD")
        try:
            return date.fromisoformat(raw)
        except ValueError as error:
            raise self.fail(f"not a real date ({error})") from None

    def word(self, *, choices: tuple[str, ...]) -> str:
        raw = self._plain_scalar()
        if raw not in choices:
            raise self.fail(f"expected one of: {', '.join(choices)}")
        return raw

    def words(self) -> tuple[Value, ...]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail("expected a list, written [a, b] or as lines starting with '- '")
        return tuple(Value(item, f"{self.key}[{i}]") for i, item in enumerate(self.node.value))

    def _plain_scalar(self) -> str:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("expected a single value")
        return str(self.node.value).strip()


def compose(text: str) -> Value:
    """Parse YAML text into the root `Value`. Raises `YamlShapeError` on a syntax error."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = int(mark.line) + 1 if mark is not None else None
        raise YamlShapeError("", line, f"not valid YAML: {_one_line(error.problem)}") from None
    except yaml.YAMLError as error:
        raise YamlShapeError("", None, f"not valid YAML: {_one_line(error)}") from None
    if node is None:
        raise YamlShapeError("", 1, "the file is empty")
    return Value(node, "")


def _one_line(problem: object) -> str:
    """PyYAML's messages may run over several lines (the reader's position on the next): one line."""
    return " ".join(str(problem).split())
