"""Agreements as data and the pure evaluator that turns one into a Decision.

Imports nothing from the other layers and touches no database, network, environment or clock.
"""

from policies.access import Access, OfficerIssuer
from policies.agreements import (
    AGREEMENTS_DIR,
    Agreement,
    AgreementFileError,
    load_agreements,
    parse_agreement,
)
from policies.console import ConsoleReaders
from policies.decisions import (
    Decision,
    DenyCode,
    Obligation,
    ProtectedAddress,
    PurposeContext,
    RowScope,
    WithheldField,
)
from policies.evaluator import REVIEW_GRACE, evaluate, out_of_force
from policies.fields import FIELDS_BY_NAME, LOCATION_FIELDS, PERSON_FIELDS, FieldSpec, field_order
from policies.populations import POPULATIONS

__all__ = [
    "AGREEMENTS_DIR",
    "FIELDS_BY_NAME",
    "LOCATION_FIELDS",
    "PERSON_FIELDS",
    "POPULATIONS",
    "REVIEW_GRACE",
    "Access",
    "Agreement",
    "AgreementFileError",
    "ConsoleReaders",
    "Decision",
    "DenyCode",
    "FieldSpec",
    "Obligation",
    "OfficerIssuer",
    "ProtectedAddress",
    "PurposeContext",
    "RowScope",
    "WithheldField",
    "evaluate",
    "field_order",
    "load_agreements",
    "out_of_force",
    "parse_agreement",
]
