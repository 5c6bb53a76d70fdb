"""deploy/Dockerfile as a list of instructions per stage, read the way `docker build` reads it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.manifests import DEPLOY


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, ENV, RUN, COPY, ...
    arguments: str  # the rest of the logical line, continuations joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        [found] = self.all(keyword)
        return found


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined; comment lines (even inside a continuation) dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((pending + stripped).strip())
        pending = ""
    if pending:
        lines.append(pending.strip())
    return lines


def parse(path: Path = DEPLOY / "Dockerfile") -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, arguments.strip()))
    return stages


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """`ENV A=1 B=2` (the only form used here)."""
    pairs = {}
    for word in shlex.split(instruction.arguments):
        key, sep, value = word.partition("=")
        assert sep, f"ENV {instruction.arguments!r}: only KEY=VALUE is supported here"
        pairs[key] = value
    return pairs


def exec_form(arguments: str) -> list[str]:
    """A JSON array (exec form), as CMD, ENTRYPOINT and HEALTHCHECK's CMD use it here."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK's options (--interval=15s ...) and its command, in exec form."""
    arguments = stage.one("HEALTHCHECK").arguments
    options_text, sep, command = arguments.partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {arguments!r}"
    options = dict(word.removeprefix("--").split("=", 1) for word in options_text.split())
    return options, exec_form(command.strip())


def run_command(instruction: Instruction) -> list[str]:
    """A RUN in shell form, as words, without its --mount options (they only choose a cache)."""
    words = shlex.split(instruction.arguments)
    while words and words[0].startswith("--mount="):
        words.pop(0)
    return words
