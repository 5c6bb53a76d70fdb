"""The pure, deny-by-default evaluator.

`evaluate(agreement, context, today=...)` walks the rules below in order; the first that refuses
decides, and only when none refuses is the request allowed. It reads no clock, environment,
database or network: `today` is passed in.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final

from policies.agreements import Agreement
from policies.decisions import (
    Decision,
    DenyCode,
    Obligation,
    ProtectedAddress,
    PurposeContext,
    RowScope,
    WithheldField,
)
from policies.fields import LOCATION_FIELDS

# An agreement whose review is overdue keeps working for this long, then every request is refused
# until the data protection officer records a new review date (and bumps the version).
REVIEW_GRACE: Final = timedelta(days=30)

PROTECTED_ADDRESS_REASON: Final = "protected-address marker"


def evaluate(agreement: Agreement | None, context: PurposeContext, *, today: date) -> Decision:
    if agreement is None:
        return _deny(None, "no-agreement", DenyCode.FORBIDDEN, "the client is bound to no known agreement")
    refused = out_of_force(agreement, today=today)
    if refused is not None:
        return refused
    return _purpose(agreement, context, today)


def out_of_force(agreement: Agreement, *, today: date) -> Decision | None:
    """The refusal of an agreement that is not in force today (dates, review), or None. The token
    endpoint asks this too: an agreement out of force gets no tokens."""
    if today < agreement.effective.start:
        return _deny(
            agreement,
            "effective.from",
            DenyCode.AGREEMENT_NOT_IN_EFFECT,
            "the agreement is not yet in effect",
        )
    if today > agreement.effective.until:
        return _deny(agreement, "effective.until", DenyCode.AGREEMENT_EXPIRED, "the agreement has expired")
    if today > agreement.review_due + REVIEW_GRACE:
        return _deny(
            agreement,
            "review_due",
            DenyCode.AGREEMENT_REVIEW_OVERDUE,
            "the agreement's review is overdue beyond the grace period",
        )
    return None


def _purpose(agreement: Agreement, context: PurposeContext, today: date) -> Decision:
    if "acting_user" in agreement.requires and not context.acting_user:
        return _deny(
            agreement, "requires.acting_user", DenyCode.PURPOSE_CONTEXT_REQUIRED, "an acting user is required"
        )
    if agreement.access.verifies_officers and not (context.acting_user and context.acting_user_verified):
        return _deny(
            agreement,
            "acting_user.verified",
            DenyCode.ACTING_USER_NOT_VERIFIED,
            "the acting user must be named by the partner's identity provider (token exchange)",
        )
    if "case_reference" in agreement.requires and not context.case_reference:
        return _deny(
            agreement,
            "requires.case_reference",
            DenyCode.PURPOSE_CONTEXT_REQUIRED,
            "a case reference is required",
        )
    if context.break_glass_reason and not agreement.break_glass:
        return _deny(
            agreement, "break_glass", DenyCode.FORBIDDEN, "break-glass is not part of this agreement"
        )
    return _allow(agreement, context, today)


def _allow(agreement: Agreement, context: PurposeContext, today: date) -> Decision:
    breaking_glass = bool(context.break_glass_reason) and agreement.break_glass
    # Break-glass opens one person's protected fields for a while (the gateway keeps the windows);
    # everyone else stays withheld, so the scope is WITHHOLD either way.
    protected = (
        ProtectedAddress.EXCLUDE if agreement.protected_address == "exclude" else ProtectedAddress.WITHHOLD
    )

    obligations = {Obligation.RECORD_DISCLOSURE}
    if context.acting_user or "acting_user" in agreement.requires:
        obligations.add(Obligation.RECORD_ACTING_USER)
    if context.case_reference or "case_reference" in agreement.requires:
        obligations.add(Obligation.RECORD_CASE_REFERENCE)
    if breaking_glass:
        obligations.add(Obligation.ALERT_SECURITY)

    withheld: tuple[WithheldField, ...] = ()
    if protected is ProtectedAddress.WITHHOLD:
        withheld = tuple(
            WithheldField(name, PROTECTED_ADDRESS_REASON)
            for name in agreement.fields
            if name in LOCATION_FIELDS
        )

    return Decision(
        allowed=True,
        rule="break_glass" if breaking_glass else "agreement",
        reason="break-glass for a stated emergency" if breaking_glass else "within the agreement",
        agreement_id=agreement.id,
        agreement_version=agreement.version,
        fields=agreement.fields,
        conditionally_withheld=withheld,
        scope=RowScope(
            population=agreement.population,
            today=today,
            objections_of=agreement.id if agreement.honours_objection else None,
            protected_address=protected,
            restrictions_of=agreement.id,
        ),
        listing=agreement.listing,
        match=agreement.match,
        max_page_size=agreement.limits.max_page_size,
        obligations=frozenset(obligations),
        purpose=agreement.purpose,
        lawful_basis=agreement.lawful_basis,
    )


def _deny(agreement: Agreement | None, rule: str, code: DenyCode, reason: str) -> Decision:
    return Decision(
        allowed=False,
        rule=rule,
        reason=reason,
        code=code,
        agreement_id=agreement.id if agreement else None,
        agreement_version=agreement.version if agreement else None,
        purpose=agreement.purpose if agreement else "",
        lawful_basis=agreement.lawful_basis if agreement else (),
    )
