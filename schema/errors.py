"""GraphQL errors as partners see them: a stable `extensions.code` and a message with no data in it.

graphql-core and strawberry write the offending input into their messages ("String cannot
represent a non string value: Smith", "Value cannot represent a Date: \"2011-02-30\"") and suggest
names that exist ("Did you mean 'uprn'?"). A partner's own input may be a name or a date of birth,
and a suggestion would reveal fields of other views, so every message is cut back to the part that
names only the GraphQL construct, and anything unexpected becomes "Unexpected error.".

Exceptions:
    ViewError               an error a resolver raises on purpose; its message is safe to show
      BadUserInputError     an argument is out of range or not a value this view issued
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from graphql import GraphQLError

from resolvers import AccessError, PageSizeError

UNEXPECTED_MESSAGE: Final = "Unexpected error."

_SUGGESTION = re.compile(r"\s*Did you mean\b.*$", re.DOTALL)
# Where graphql-core starts quoting a value: after ": " or at ", found" / " found ".
_VALUE_TAIL = re.compile(r"(?::\s|,?\s+found\s).*$", re.DOTALL)
_VARIABLE = re.compile(r"^Variable '(\$\w+)' (?:has|got) (?:an )?invalid value")
# Variables whose values could not be coerced: the request's input, not the document, is at fault.
_VARIABLE_INPUT = re.compile(
    r"^Variable '\$\w+' (?:(?:has|got) (?:an )?invalid value|of .* (?:was not provided|must not be null))"
)
_QUOTED_VALUE = re.compile(r"^Value '.*?' ", re.DOTALL)
# A @skip or @include whose condition is a variable sent as null (declared nullable, with a default):
# found as the document runs, at the root or under a field; the request's input is at fault.
_CONDITION_INPUT = re.compile(r"^Argument 'if' has invalid value")
CONDITION_MESSAGE: Final = "The condition of @skip or @include must be true or false."
# Codes of our own validation rules, whose messages quote no input and are shown whole.
_OWN_CODES: Final = frozenset({"QUERY_TOO_COMPLEX"})


class ViewError(Exception):
    code: str = "BAD_REQUEST"


class BadUserInputError(ViewError):
    code = "BAD_USER_INPUT"


@dataclass(frozen=True, slots=True)
class PublicError:
    code: str
    message: str
    expected: bool  # False: a fault of ours, to be logged with its cause

    def as_dict(self, error: GraphQLError) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if error.locations:
            out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
        if error.path:
            out["path"] = list(error.path)
        out["extensions"] = {"code": self.code}
        return out


def classify(error: GraphQLError) -> PublicError:
    original = error.original_error
    if isinstance(original, ViewError):
        return PublicError(original.code, str(original), expected=True)
    if isinstance(original, PageSizeError):
        return PublicError("BAD_USER_INPUT", str(original), expected=True)
    if isinstance(original, AccessError):
        return PublicError("FORBIDDEN", "Not allowed by the agreement.", expected=False)
    if original is None and _CONDITION_INPUT.match(error.message):
        return PublicError("BAD_USER_INPUT", CONDITION_MESSAGE, expected=True)
    declared = (error.extensions or {}).get("code")
    if isinstance(declared, str) and original is None:
        message = error.message if declared in _OWN_CODES else redact(error.message)
        return PublicError(declared, message, expected=True)
    if error.path is None:
        # Before execution: syntax, validation, or coercion of variables.
        if error.message.startswith("Syntax Error"):
            return PublicError("GRAPHQL_PARSE_FAILED", redact(error.message), expected=True)
        if _VARIABLE_INPUT.match(error.message):
            return PublicError("BAD_USER_INPUT", redact(error.message), expected=True)
        return PublicError("GRAPHQL_VALIDATION_FAILED", redact(error.message), expected=True)
    return PublicError("INTERNAL_SERVER_ERROR", UNEXPECTED_MESSAGE, expected=False)


def redact(message: str) -> str:
    """The message without suggestions and without any echoed value."""
    message = _SUGGESTION.sub("", message)
    if message.startswith("Syntax Error"):
        return "Syntax Error: the document is not valid GraphQL."
    variable = _VARIABLE.match(message)
    if variable:
        return f"Variable '{variable.group(1)}' has an invalid value."
    message = _QUOTED_VALUE.sub("Value ", message)
    message = _VALUE_TAIL.sub("", message).rstrip(" .;,") + "."
    if '"' in message:
        return "Invalid value."
    return message
