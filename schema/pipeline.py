"""One extension for every view: bounded, cached parse and validation, one operation, and spans.

Strawberry enters extension hooks one after another and does not unwind those already entered when
a later one raises, so a tracing span opened around ParserCache's failing parse stayed open and
current. Here the parse and the validation happen inside this extension's own hooks, each in a
span that is closed before the hook yields, so nothing is left half-entered; it is the only
extension on a view.

Spans carry no query text and no values (strawberry's OpenTelemetryExtension records both), there
is no per-field hook (any `resolve` hook wraps every field in a coroutine: 100 rows x 4 fields went
from 1.37 to 6.5 ms), and exceptions are never recorded on spans, because their messages quote
input ("Syntax Error: Unexpected Name 'Smith'"): a failed step gets an ERROR status named by the
exception's type.

strawberry falls back to the first operation when a request names none; the GraphQL spec makes that
a request error when the document holds several, and the audit must record the operation that ran.
Raising strawberry's own CannotGetOperationTypeError makes `Schema.execute` re-raise it, so the
gateway answers 400 before validation or execution.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
)
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.schema.schema import validate_document

from schema.context import ViewContext
from schema.limits import CODE, people_cost

CACHE_SIZE: Final = 512


@lru_cache(maxsize=CACHE_SIZE)
def parsed(query: str, max_tokens: int) -> DocumentNode:
    return parse(query, max_tokens=max_tokens)


@lru_cache(maxsize=CACHE_SIZE)
def validated(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    return validate_document(schema, document, rules)


@dataclass(frozen=True)
class PeopleLimit:
    """How many people one document may ask for; `pages`: each list field and its default page size."""

    maximum: int
    pages: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # list field: (default, largest)


class OperationPipeline(SchemaExtension):
    def __init__(
        self,
        *,
        tracer: Tracer,
        max_tokens: int,
        rules: tuple[type[ASTValidationRule], ...],
        cost: PeopleLimit | None = None,
    ) -> None:
        super().__init__()
        self.tracer = tracer
        self.max_tokens = max_tokens
        self.rules = rules  # the same tuple for every request of a view, so the validation cache hits
        self.cost = cost

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        with self._span("graphql.parse"):
            execution.graphql_document = parsed(execution.query or "", self.max_tokens)
        operations = [
            d for d in execution.graphql_document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        if len(operations) > 1 and execution._provided_operation_name is None:
            raise CannotGetOperationTypeError(None)
        if isinstance(execution.context, ViewContext):
            execution.context.operation_name = execution.operation_name
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        assert execution.graphql_document is not None
        with self._span("graphql.validate") as span:
            errors = validated(
                execution.schema._schema,
                execution.graphql_document,
                (*execution.validation_rules, *self.rules),
            )
            span.set_attribute("graphql.validation.errors", len(errors))
        if not errors and self.cost is not None:
            errors = self._within_cost(
                execution.graphql_document, execution.operation_name, execution.variables
            )
        # Setting the errors (even an empty list) tells strawberry validation has been done.
        execution.pre_execution_errors = list(errors)
        yield

    def _within_cost(
        self, document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None
    ) -> list[GraphQLError]:
        assert self.cost is not None
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        operation = next(
            (o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)),
            None,
        )
        if operation is None:
            return []
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        cost = people_cost(operation, fragments, variables or {}, pages=self.cost.pages)
        if cost <= self.cost.maximum:
            return []
        message = (
            f"Query too complex: a document may ask for at most {self.cost.maximum} people (this one {cost})."
        )
        return [GraphQLError(message, operation, extensions={"code": CODE})]

    def on_execute(self) -> Iterator[None]:
        with self._span("graphql.execute") as span:
            context = self.execution_context.context
            if isinstance(context, ViewContext):
                if context.decision.agreement_label:
                    span.set_attribute("gateway.agreement", context.decision.agreement_label)
                if context.operation_name:
                    span.set_attribute("graphql.operation.name", context.operation_name)
            yield
            if isinstance(context, ViewContext):
                span.set_attribute("gateway.people_count", len({d.person_id for d in context.disclosures}))

    @contextmanager
    def _span(self, name: str) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            name, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
