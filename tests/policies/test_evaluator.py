"""The evaluator, table by table: (agreement variant, purpose context, today) -> decision.

Every variant pins its dates with `dataclasses.replace`, and every call passes `today`, so these
tests mean the same whatever the calendar says and whatever dates the shipped files carry.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest

from policies import (
    LOCATION_FIELDS,
    REVIEW_GRACE,
    Agreement,
    DenyCode,
    Obligation,
    ProtectedAddress,
    PurposeContext,
    evaluate,
    load_agreements,
)
from policies.access import Access
from policies.agreements import Effective
from policies.evaluator import PROTECTED_ADDRESS_REASON

SHIPPED = load_agreements()
START, UNTIL, REVIEW = date(2025, 4, 1), date(2027, 3, 31), date(2026, 9, 30)
IN_EFFECT = date(2026, 1, 15)
DAY = timedelta(days=1)

# The acting user as the partner's identity provider named them (police, youth justice and MASH want that).
FULL = PurposeContext(acting_user="user-0001", case_reference="CASE-0001", acting_user_verified=True)
NO_CONTEXT = PurposeContext()
ACTING_ONLY = PurposeContext(acting_user="user-0001", acting_user_verified=True)
CASE_ONLY = PurposeContext(case_reference="CASE-0001")
BREAK_GLASS = replace(FULL, break_glass_reason="stated risk of serious harm")

RD, RAU, RCR, ALERT = (
    Obligation.RECORD_DISCLOSURE,
    Obligation.RECORD_ACTING_USER,
    Obligation.RECORD_CASE_REFERENCE,
    Obligation.ALERT_SECURITY,
)


def pinned(agreement_id: str, **changes: Any) -> Agreement:
    """A shipped agreement in effect from START to UNTIL, review due on REVIEW, then `changes`."""
    agreement = replace(SHIPPED[agreement_id], effective=Effective(START, UNTIL), review_due=REVIEW)
    return replace(agreement, **changes)


def row(
    agreement_id: str | None,
    context: PurposeContext,
    today: date,
    allowed: bool,
    code: DenyCode | None,
    rule: str,
    *,
    id: str,
    **changes: Any,
) -> object:
    return pytest.param(agreement_id, changes, context, today, allowed, code, rule, id=id)


ALLOW, DENY = True, False
NOT_YET, EXPIRED, OVERDUE = (
    DenyCode.AGREEMENT_NOT_IN_EFFECT,
    DenyCode.AGREEMENT_EXPIRED,
    DenyCode.AGREEMENT_REVIEW_OVERDUE,
)
NEEDS_CONTEXT = DenyCode.PURPOSE_CONTEXT_REQUIRED
POLICE, DWP, HUB, MASH = "police-prevention", "dwp-worklessness", "family-hub-outreach", "mash-safeguarding"
REVIEW_LATER = {"review_due": UNTIL}  # so that only the effective dates can decide

DECISIONS = [
    row(None, FULL, IN_EFFECT, DENY, DenyCode.FORBIDDEN, "no-agreement", id="no-agreement"),
    # Effective dates: both ends inclusive
    row(POLICE, FULL, START - DAY, DENY, NOT_YET, "effective.from", id="day-before-from"),
    row(POLICE, FULL, START, ALLOW, None, "agreement", id="on-from"),
    row(POLICE, FULL, UNTIL, ALLOW, None, "agreement", id="on-until", **REVIEW_LATER),
    row(POLICE, FULL, UNTIL + DAY, DENY, EXPIRED, "effective.until", id="day-after-until", **REVIEW_LATER),
    # Review: overdue keeps working for REVIEW_GRACE, then refuses
    row(POLICE, FULL, REVIEW, ALLOW, None, "agreement", id="on-review-due"),
    row(POLICE, FULL, REVIEW + DAY, ALLOW, None, "agreement", id="review-overdue-by-a-day"),
    row(POLICE, FULL, REVIEW + REVIEW_GRACE, ALLOW, None, "agreement", id="last-day-of-grace"),
    row(POLICE, FULL, REVIEW + REVIEW_GRACE + DAY, DENY, OVERDUE, "review_due", id="day-beyond-grace"),
    row(POLICE, FULL, REVIEW + timedelta(days=30), ALLOW, None, "agreement", id="grace-is-thirty-days"),
    row(POLICE, FULL, REVIEW + timedelta(days=31), DENY, OVERDUE, "review_due", id="grace-is-not-31-days"),
    # The first rule that refuses decides
    row(POLICE, FULL, UNTIL + DAY, DENY, EXPIRED, "effective.until", id="expired-before-review-overdue"),
    row(POLICE, NO_CONTEXT, START - DAY, DENY, NOT_YET, "effective.from",
        id="not-in-effect-before-missing-context"),
    row(POLICE, NO_CONTEXT, REVIEW + REVIEW_GRACE + DAY, DENY, OVERDUE, "review_due",
        id="review-overdue-before-missing-context"),
    # Purpose context
    row(POLICE, CASE_ONLY, IN_EFFECT, DENY, NEEDS_CONTEXT,
        "requires.acting_user", id="police-without-acting-user"),
    row(POLICE, ACTING_ONLY, IN_EFFECT, DENY, NEEDS_CONTEXT,
        "requires.case_reference", id="police-without-case-reference"),
    row(POLICE, NO_CONTEXT, IN_EFFECT, DENY, NEEDS_CONTEXT, "requires.acting_user",
        id="police-without-either"),
    row(POLICE, replace(FULL, acting_user=""), IN_EFFECT, DENY, NEEDS_CONTEXT,
        "requires.acting_user", id="empty-acting-user-is-missing"),
    row(POLICE, replace(FULL, case_reference=""), IN_EFFECT, DENY, NEEDS_CONTEXT,
        "requires.case_reference", id="empty-case-reference-is-missing"),
    row(HUB, NO_CONTEXT, IN_EFFECT, DENY, NEEDS_CONTEXT, "requires.acting_user",
        id="family-hub-without-acting-user"),
    row(HUB, ACTING_ONLY, IN_EFFECT, ALLOW, None, "agreement", id="family-hub-needs-no-case-reference"),
    row(DWP, NO_CONTEXT, IN_EFFECT, ALLOW, None, "agreement", id="dwp-requires-nothing"),
    row(POLICE, NO_CONTEXT, IN_EFFECT, ALLOW, None, "agreement", id="police-variant-requiring-nothing",
        requires=frozenset(), access=Access()),
    row(MASH, replace(BREAK_GLASS, case_reference=None), IN_EFFECT, DENY, NEEDS_CONTEXT,
        "requires.case_reference", id="mash-break-glass-without-case-reference"),
    # Break-glass
    row(POLICE, BREAK_GLASS, IN_EFFECT, DENY, DenyCode.FORBIDDEN, "break_glass", id="break-glass-on-police"),
    row(DWP, PurposeContext(break_glass_reason="urgent"), IN_EFFECT, DENY, DenyCode.FORBIDDEN, "break_glass",
        id="break-glass-on-dwp"),
    row(POLICE, replace(FULL, break_glass_reason=""), IN_EFFECT, ALLOW, None, "agreement",
        id="empty-break-glass-reason-is-none"),
    row(MASH, BREAK_GLASS, IN_EFFECT, ALLOW, None, "break_glass", id="break-glass-on-mash"),
    row(MASH, FULL, IN_EFFECT, ALLOW, None, "agreement", id="mash-without-break-glass"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("agreement_id", "changes", "context", "today", "allowed", "code", "rule"), DECISIONS
)
def test_decision(
    agreement_id: str | None,
    changes: dict[str, Any],
    context: PurposeContext,
    today: date,
    allowed: bool,
    code: DenyCode | None,
    rule: str,
) -> None:
    agreement = pinned(agreement_id, **changes) if agreement_id else None
    decision = evaluate(agreement, context, today=today)
    assert (decision.allowed, decision.code, decision.rule) == (allowed, code, rule)
    if allowed:
        assert decision.scope is not None
        assert decision.scope.today == today
    else:
        # A refusal carries no data-access instructions at all.
        assert (decision.scope, decision.fields, decision.conditionally_withheld) == (None, (), ())
        assert decision.obligations == frozenset()


@pytest.mark.parametrize("agreement_id", sorted(SHIPPED))
def test_allowed_decision_carries_the_agreement(agreement_id: str) -> None:
    agreement = pinned(agreement_id, version=7)
    decision = evaluate(agreement, FULL, today=IN_EFFECT)
    assert decision.allowed is True
    assert decision.code is None
    assert (decision.agreement_id, decision.agreement_version) == (agreement_id, 7)
    assert decision.agreement_label == f"{agreement_id}@7"
    assert decision.fields == agreement.fields
    assert (decision.match, decision.listing) == (agreement.match, agreement.listing)
    assert decision.max_page_size == agreement.limits.max_page_size
    assert (decision.purpose, decision.lawful_basis) == (agreement.purpose, agreement.lawful_basis)
    assert decision.scope is not None
    assert (decision.scope.population, decision.scope.today) == (agreement.population, IN_EFFECT)
    assert RD in decision.obligations


@pytest.mark.parametrize(
    ("agreement_id", "objections_of", "protected", "withheld"),
    [
        pytest.param(POLICE, None, ProtectedAddress.EXCLUDE, (), id=POLICE),
        pytest.param(DWP, None, ProtectedAddress.EXCLUDE, (), id=DWP),
        pytest.param("ons-evaluation", None, ProtectedAddress.EXCLUDE, (), id="ons-evaluation"),
        pytest.param(HUB, HUB, ProtectedAddress.EXCLUDE, (), id=HUB),
        pytest.param("youth-justice", None, ProtectedAddress.EXCLUDE, (),
                     id="youth-justice"),
        pytest.param(MASH, None, ProtectedAddress.WITHHOLD, ("address", "uprn", "phone", "email", "school"),
                     id=MASH),
    ],
)  # fmt: skip
def test_row_scope_and_withheld_fields(
    agreement_id: str, objections_of: str | None, protected: ProtectedAddress, withheld: tuple[str, ...]
) -> None:
    decision = evaluate(pinned(agreement_id), FULL, today=IN_EFFECT)
    assert decision.scope is not None
    assert (decision.scope.objections_of, decision.scope.protected_address) == (objections_of, protected)
    assert tuple(item.field for item in decision.conditionally_withheld) == withheld
    assert {item.reason for item in decision.conditionally_withheld} <= {PROTECTED_ADDRESS_REASON}


def test_withheld_fields_follow_agreement_order_not_catalogue_order() -> None:
    agreement = pinned(MASH, fields=("school", "givenName", "phone", "members", "address"))
    decision = evaluate(agreement, FULL, today=IN_EFFECT)
    expected = tuple(name for name in agreement.fields if name in LOCATION_FIELDS)
    assert expected == ("school", "phone", "address")
    assert tuple(item.field for item in decision.conditionally_withheld) == expected


def test_break_glass_on_mash_is_allowed_with_an_alert_and_opens_no_one_by_itself() -> None:
    # The evaluator only allows break-glass: the gateway opens one person's window (RowScope.opened).
    agreement = pinned(MASH)
    decision = evaluate(agreement, BREAK_GLASS, today=IN_EFFECT)
    ordinary = evaluate(agreement, FULL, today=IN_EFFECT)
    assert (decision.allowed, decision.rule) == (True, "break_glass")
    assert decision.scope is not None
    assert decision.scope.protected_address is ProtectedAddress.WITHHOLD
    assert decision.scope.opened == frozenset()
    assert decision.scope == ordinary.scope
    assert decision.conditionally_withheld == ordinary.conditionally_withheld != ()
    assert decision.fields == agreement.fields
    assert decision.obligations == frozenset({RD, RAU, RCR, ALERT})


@pytest.mark.parametrize(
    ("agreement_id", "context", "obligations"),
    [
        pytest.param(DWP, NO_CONTEXT, {RD}, id="dwp-nothing-stated"),
        pytest.param(DWP, ACTING_ONLY, {RD, RAU}, id="dwp-acting-user-stated"),
        pytest.param(DWP, CASE_ONLY, {RD, RCR}, id="dwp-case-reference-stated"),
        pytest.param(HUB, ACTING_ONLY, {RD, RAU}, id="family-hub"),
        pytest.param(POLICE, FULL, {RD, RAU, RCR}, id="police"),
        pytest.param(MASH, FULL, {RD, RAU, RCR}, id="mash-without-break-glass"),
        pytest.param(MASH, BREAK_GLASS, {RD, RAU, RCR, ALERT}, id="mash-break-glass"),
    ],
)  # fmt: skip
def test_obligations(agreement_id: str, context: PurposeContext, obligations: set[Obligation]) -> None:
    decision = evaluate(pinned(agreement_id), context, today=IN_EFFECT)
    assert decision.obligations == frozenset(obligations)


def test_refusal_still_names_the_agreement() -> None:
    agreement = pinned(POLICE, version=4)
    decision = evaluate(agreement, FULL, today=UNTIL + DAY)
    assert (decision.agreement_id, decision.agreement_version) == (POLICE, 4)
    assert decision.agreement_label == "police-prevention@4"
    assert (decision.purpose, decision.lawful_basis) == (agreement.purpose, agreement.lawful_basis)
    assert decision.reason == "the agreement has expired"


def test_refusal_without_agreement_names_none() -> None:
    decision = evaluate(None, BREAK_GLASS, today=IN_EFFECT)
    assert (decision.agreement_id, decision.agreement_version, decision.agreement_label) == (None, None, None)
    assert (decision.purpose, decision.lawful_basis) == ("", ())


@pytest.mark.parametrize("agreement_id", ["police-prevention", "youth-justice", "mash-safeguarding"])
def test_an_asserted_acting_user_is_not_enough_where_the_agreement_wants_a_verified_one(
    agreement_id: str,
) -> None:
    asserted = PurposeContext(acting_user="user-0001", case_reference="CASE-0001")
    decision = evaluate(pinned(agreement_id), asserted, today=IN_EFFECT)
    assert (decision.allowed, decision.code, decision.rule) == (
        False, DenyCode.ACTING_USER_NOT_VERIFIED, "acting_user.verified"
    )  # fmt: skip
    assert evaluate(pinned(agreement_id), FULL, today=IN_EFFECT).allowed


def test_an_asserted_acting_user_is_enough_where_the_agreement_takes_one() -> None:
    asserted = PurposeContext(acting_user="analyst-7", case_reference="SEC-1")
    assert evaluate(pinned("security-audit"), asserted, today=IN_EFFECT).allowed
