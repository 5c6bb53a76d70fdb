"""GraphQL types and one schema per agreement; maps our errors to GraphQL errors with stable codes."""

from schema.context import ConnectionFactory, Disclosure, ViewContext
from schema.errors import UNEXPECTED_MESSAGE, BadUserInputError, PublicError, ViewError, classify, redact
from schema.views import View, build_view, build_views

__all__ = [
    "UNEXPECTED_MESSAGE",
    "BadUserInputError",
    "ConnectionFactory",
    "Disclosure",
    "PublicError",
    "View",
    "ViewContext",
    "ViewError",
    "build_view",
    "build_views",
    "classify",
    "redact",
]
