"""Who may sign in to the security console, in the agreement that governs reading the ledger.

    console:                          # the security-audit agreement only
      claim: groups                   # a claim of the council identity provider's ID token ...
      any_of: [information-security]  # ... that must hold one of these values (a string or a list)
      reader_claim: email             # the claim that names the reader in the ledger

The gateway verifies the ID token (OpenID Connect); this decides, from its claims alone, whether the
person it names may read, and by which name their reads are recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from policies._yaml import Value

CONSOLE_KEYS: Final = frozenset({"claim", "any_of", "reader_claim"})
_CLAIM: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_GROUP: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
MAX_READER_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class ConsoleReaders:
    claim: str
    any_of: frozenset[str]
    reader_claim: str

    def admits(self, claims: Mapping[str, Any]) -> bool:
        """Whether the verified claims name someone this agreement lets read the ledger."""
        held = claims.get(self.claim)
        values = [held] if isinstance(held, str) else held if isinstance(held, list) else []
        return self.reader(claims) is not None and any(
            isinstance(value, str) and value in self.any_of for value in values
        )

    def kept(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The claims `admits` reads, to keep with a session and judge again on every request."""
        names = (self.claim, self.reader_claim, f"{self.reader_claim}_verified")
        return {name: claims[name] for name in names if name in claims}

    def reader(self, claims: Mapping[str, Any]) -> str | None:
        """The reader's name as the ledger records it; None if the claim is missing or unusable."""
        name = claims.get(self.reader_claim)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_READER_CHARS:
            return None
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            return None
        # OpenID Connect's `email_verified` (and the like): a name the provider says it has not checked
        # could be anyone's, and the ledger would record their reads under it.
        if claims.get(f"{self.reader_claim}_verified") is False:
            return None
        return name.strip()


def parse_console(value: Value) -> ConsoleReaders:
    mapping = value.mapping(allowed=CONSOLE_KEYS, required=CONSOLE_KEYS)
    names = {}
    for key in ("claim", "reader_claim"):
        names[key] = mapping[key].text()
        if not _CLAIM.match(names[key]):
            raise mapping[key].fail("a claim name: letters, digits, _ . : -, at most 64")
    groups: set[str] = set()
    for item in mapping["any_of"].words():
        group = item.text()
        if not _GROUP.match(group):
            raise item.fail("a value of at most 200 printable characters")
        if group in groups:
            raise item.fail("listed twice")
        groups.add(group)
    if not groups:
        raise mapping["any_of"].fail("at least one value")
    return ConsoleReaders(claim=names["claim"], any_of=frozenset(groups), reader_claim=names["reader_claim"])
