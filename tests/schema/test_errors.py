"""What partners see of errors: a stable code and a message with no value, no suggestion, no quote.

The errors are real: graphql-core and strawberry produce them from queries against the views.
No database is needed: every query here fails before a resolver would open a connection.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInt,
    GraphQLObjectType,
    GraphQLSchema,
    graphql_sync,
)

from policies import PurposeContext, evaluate, load_agreements
from resolvers import FieldNotAllowedError, PageSizeError, RefCodec
from schema import (
    UNEXPECTED_MESSAGE,
    BadUserInputError,
    PublicError,
    ViewContext,
    ViewError,
    build_view,
    classify,
    redact,
)
from schema.errors import CONDITION_MESSAGE
from tests.conftest import FIXED_TODAY, REF_SECRET

POLICE = load_agreements()["police-prevention"]
VIEW = build_view(POLICE)
SECRETS = ("Brackenridge", "1987-02-30", "19870230", "10000000000")
PARSE, INVALID, INPUT = "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"
SYNTAX = "Syntax Error: the document is not valid GraphQL."


def _no_database() -> NoReturn:
    raise AssertionError("these queries must fail before any connection is opened")


async def errors_of(query: str, variables: dict[str, Any] | None = None) -> list[GraphQLError]:
    decision = evaluate(POLICE, PurposeContext("u", "c", acting_user_verified=True), today=FIXED_TODAY)
    context = ViewContext(decision=decision, refs=RefCodec(REF_SECRET, POLICE.id), connect=_no_database)
    result = await VIEW.schema.execute(query, variable_values=variables, context_value=context)
    assert result.errors, "the query was expected to fail"
    return list(result.errors)


def find(name: str = '"Ada"', dob: str = '"1987-02-28"', variables: str = "") -> str:
    head = f"query({variables}) " if variables else ""
    return head + f"{{ findPeople(familyName: {name}, dateOfBirth: {dob}) {{ ref }} }}"


def people(first: str, variables: str = "") -> str:
    head = f"query({variables}) " if variables else ""
    return head + f"{{ people(first: {first}) {{ pageInfo {{ hasNextPage }} }} }}"


def case(case_id: str, query: str, code: str, message: str, variables: Any = None) -> Any:
    return pytest.param(query, variables, code, message, id=case_id)


CASES = [
    case(
        "another-views-field",
        '{ person(ref: "x") { ref uprn } }',
        INVALID,
        "Cannot query field 'uprn' on type 'Person'.",
    ),
    case(
        "field-typo",
        '{ person(ref: "x") { postcod } }',
        INVALID,
        "Cannot query field 'postcod' on type 'Person'.",
    ),
    case(
        "type-typo", find(dob="$d", variables="$d: Dat!"), INVALID, "Unknown type 'Dat'.", {"d": "1987-02-28"}
    ),
    case(
        "fragment-type-typo",
        '{ person(ref: "x") { ... on Persn { ref } } }',
        INVALID,
        "Unknown type 'Persn'.",
    ),
    case(
        "no-subselection",
        '{ person(ref: "x") }',
        INVALID,
        "Field 'person' of type 'Person' must have a selection of subfields.",
    ),
    case("date-literal", find(dob='"1987-02-30"'), INVALID, "Value cannot represent a Date."),
    case("int-literal-for-date", find(dob="19870230"), INVALID, "Value cannot represent a Date."),
    case(
        "enum-literal-for-string",
        find(name="Brackenridge"),
        INVALID,
        "String cannot represent a non string value.",
    ),
    case(
        "int-overflow",
        people("10000000000"),
        INVALID,
        "Int cannot represent non 32-bit signed integer value.",
    ),
    case("string-for-int", people('"Brackenridge"'), INVALID, "Int cannot represent non-integer value."),
    case(
        "directive",
        '{ person(ref: "x") { ref @skip(if: "Brackenridge") } }',
        INVALID,
        "Boolean cannot represent a non boolean value.",
    ),
    case(
        "date-variable",
        find(dob="$d", variables="$d: Date!"),
        INPUT,
        "Variable '$d' has an invalid value.",
        {"d": "1987-02-30"},
    ),
    case(
        "int-for-date-variable",
        find(dob="$d", variables="$d: Date!"),
        INPUT,
        "Variable '$d' has an invalid value.",
        {"d": 19870230},
    ),
    case(
        "list-for-string-variable",
        find(name="$n", variables="$n: String!"),
        INPUT,
        "Variable '$n' has an invalid value.",
        {"n": ["Brackenridge"]},
    ),
    case(
        "enum-like-variable",
        find(name="$n", variables="$n: String!"),
        INPUT,
        "Variable '$n' has an invalid value.",
        {"n": 10000000000},
    ),
    case(
        "missing-variable",
        find(name="$n", variables="$n: String!"),
        INPUT,
        "Variable '$n' has an invalid value.",
        {},
    ),
    case(
        "int-variable",
        people("$f", variables="$f: Int"),
        INPUT,
        "Variable '$f' has an invalid value.",
        {"f": 10000000000},
    ),
    case("syntax-name", find(name="Brackenridge-Vale"), PARSE, SYNTAX),
    case("syntax-unterminated", '{ findPeople(familyName: "Brackenridge', PARSE, SYNTAX),
    case("syntax-date", "{ person(ref: 1987-02-30) { ref } }", PARSE, SYNTAX),
    case("syntax-alias", "{ Brackenridge: person(ref: ) { ref } }", PARSE, SYNTAX),
]


def assert_clean(message: str) -> None:
    assert "Did you mean" not in message and '"' not in message
    assert not any(secret in message for secret in SECRETS), message


@pytest.mark.parametrize(("query", "variables", "code", "message"), CASES)
async def test_errors_have_a_stable_code_and_a_clean_message(
    query: str, variables: dict[str, Any] | None, code: str, message: str
) -> None:
    (error,) = await errors_of(query, variables)
    assert error.path is None
    public = classify(error)
    assert (public.code, public.message, public.expected) == (code, message, True)
    assert_clean(public.message)


async def test_an_argument_typo_reports_both_problems_without_a_suggestion() -> None:
    errors = await errors_of('{ findPeople(famlyName: "Brackenridge", dateOfBirth: "1987-02-28") { ref } }')
    assert "Did you mean 'familyName'?" in errors[0].message  # what graphql-core would have said
    assert [(classify(e).code, classify(e).message) for e in errors] == [
        (INVALID, "Unknown argument 'famlyName' on field 'Query.findPeople'."),
        (
            INVALID,
            "Argument 'Query.findPeople(familyName:)' of type 'String!' is required, "
            "but it was not provided.",
        ),
    ]


@pytest.mark.parametrize(
    "query",
    [
        'query($x: Int) { person(ref: "x") { ref } }',
        "{ person(ref: $x) { ref } }",
        find(dob="$d", variables="$d: String!"),
    ],
    ids=["unused", "undefined", "wrong-position"],
)
async def test_validation_errors_about_variables_are_validation_errors(query: str) -> None:
    assert [classify(error).code for error in await errors_of(query, {"d": "1987-02-28"})] == [INVALID]


def test_an_enum_literal_is_not_echoed() -> None:
    status = GraphQLEnumType("Status", {"ELIGIBLE": "ELIGIBLE"})
    query = GraphQLObjectType("Query", {"f": GraphQLField(GraphQLInt, args={"s": GraphQLArgument(status)})})
    result = graphql_sync(GraphQLSchema(query), "{ f(s: Brackenridge) }")
    assert result.errors is not None and len(result.errors) == 1
    public = classify(result.errors[0])
    assert public.code == INVALID
    assert_clean(public.message)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (people("0"), "first must be between 1 and 100."),
        (people("101"), "first must be between 1 and 100."),
        (
            '{ people(after: "cur_Brackenridge") { edges { cursor } } }',
            "after must be a cursor returned by this view.",
        ),
        (find(name='"   "'), "familyName must be 1 to 100 characters."),
        (find(name='"' + "x" * 101 + '"'), "familyName must be 1 to 100 characters."),
    ],
)
async def test_out_of_range_arguments_are_bad_user_input(query: str, message: str) -> None:
    (error,) = await errors_of(query)
    assert error.path is not None
    assert classify(error) == PublicError(INPUT, message, expected=True)


async def test_a_null_condition_of_skip_or_include_is_bad_user_input_wherever_it_is() -> None:
    """A nullable condition variable sent as null fails as the document runs: the input's fault, not
    an unexpected error (which would be logged as an incident). Under a field it has that field's path."""
    query = "query($s: Boolean = false) { __typename again: __typename @skip(if: $s) }"
    (error,) = await errors_of(query, {"s": None})
    assert classify(error) == PublicError(INPUT, CONDITION_MESSAGE, expected=True)
    nested = GraphQLError(error.message, path=["person"])
    assert classify(nested) == PublicError(INPUT, CONDITION_MESSAGE, expected=True)


def test_as_dict_keeps_locations_path_and_code_only() -> None:
    error = GraphQLError("Brackenridge", path=["people"], original_error=BadUserInputError("first is wrong."))
    assert classify(error).as_dict(error) == {
        "message": "first is wrong.",
        "path": ["people"],
        "extensions": {"code": INPUT},
    }


class _TeapotError(ViewError):
    code = "I_AM_A_TEAPOT"


@pytest.mark.parametrize(
    ("original", "extensions", "expected"),
    [
        (_TeapotError("Short and stout."), None, PublicError("I_AM_A_TEAPOT", "Short and stout.", True)),
        (PageSizeError(100), None, PublicError(INPUT, "first must be between 1 and 100", True)),
        (
            FieldNotAllowedError("uprn"),
            None,
            PublicError("FORBIDDEN", "Not allowed by the agreement.", False),
        ),
        (RuntimeError("Brackenridge"), None, PublicError("INTERNAL_SERVER_ERROR", UNEXPECTED_MESSAGE, False)),
        # A code declared by a rule that is not ours: its message is redacted like any other.
        (None, {"code": "SOME_RULE_CODE"}, PublicError("SOME_RULE_CODE", "Too complex.", True)),
    ],
)
def test_classify_maps_causes_to_codes(
    original: Exception | None, extensions: Any, expected: PublicError
) -> None:
    message = "Too complex: 'Brackenridge'." if original is None else "Brackenridge at W2 1ZZ"
    error = GraphQLError(message, path=["person"], original_error=original, extensions=extensions)
    assert classify(error) == expected


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "Cannot query field 'x' on type 'Person'. Did you mean 'ref'?",
            "Cannot query field 'x' on type 'Person'.",
        ),
        ("Syntax Error: Unexpected Name 'Brackenridge'.", SYNTAX),
        ("Variable '$dob' got invalid value \"1987-02-30\"; bad", "Variable '$dob' has an invalid value."),
        (
            "Expected value of type 'Date!', found \"1987-02-30\"; Value cannot",
            "Expected value of type 'Date!'.",
        ),
        ('Unknown "Brackenridge" in the document', "Invalid value."),
        ("Plain message", "Plain message."),
    ],
)
def test_redact(raw: str, clean: str) -> None:
    assert redact(raw) == clean
