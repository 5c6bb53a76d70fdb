"""Every obligation the evaluator returns is carried out, or the request fails.

`unmet` is checked for each obligation, met and not met, and for one the gateway does not know; then
from outside: a break-glass request whose alert cannot be written gets no data and opens no window.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.guard import Discharged, unmet
from gateway.guard.tables import break_glass
from gateway.keys import SigningKeys
from policies import Decision, Obligation, PurposeContext, evaluate, load_agreements
from tests.conftest import FIXED_TODAY
from tests.gateway.guard.conftest import Enrol, code_of, guarded_app
from tests.support.ledger import allow_ledger_inserts, refuse_ledger_inserts
from tests.support.oracle import Oracle
from tests.support.population import EdgeCases

AGREEMENTS = load_agreements()
DONE = Discharged(recorded=True, acting_user="pc-4471", case_reference="CASE-1", alert_id="a" * 32)


def _decision(*obligations: Obligation | str) -> Decision:
    allowed = evaluate(
        AGREEMENTS["mash-safeguarding"],
        PurposeContext("pc-4471", "CASE-1", "risk", acting_user_verified=True),
        today=FIXED_TODAY,
    )
    assert allowed.allowed
    return replace(allowed, obligations=frozenset(obligations))  # type: ignore[arg-type]


def test_a_break_glass_decision_carries_all_four_obligations() -> None:
    assert _decision().obligations == frozenset()
    full = evaluate(
        AGREEMENTS["mash-safeguarding"],
        PurposeContext("pc-4471", "CASE-1", "risk", acting_user_verified=True),
        today=FIXED_TODAY,
    )
    assert full.obligations == frozenset(Obligation)
    assert unmet(full, DONE) == []


@pytest.mark.parametrize(
    ("obligation", "undone"),
    [
        (Obligation.RECORD_DISCLOSURE, replace(DONE, recorded=False)),
        (Obligation.RECORD_ACTING_USER, replace(DONE, acting_user=None)),
        (Obligation.RECORD_ACTING_USER, replace(DONE, recorded=False)),
        (Obligation.RECORD_CASE_REFERENCE, replace(DONE, case_reference="")),
        (Obligation.ALERT_SECURITY, replace(DONE, alert_id=None)),
    ],
    ids=["disclosure not recorded", "no acting user", "acting user, but no record",
         "no case reference", "no alert"],
)  # fmt: skip
def test_each_obligation_is_unmet_without_what_it_asks_for(
    obligation: Obligation, undone: Discharged
) -> None:
    assert unmet(_decision(obligation), DONE) == []
    assert unmet(_decision(obligation), undone) == [str(obligation)]


def test_an_obligation_the_gateway_does_not_know_is_never_met() -> None:
    assert unmet(_decision("notify_the_data_protection_officer"), DONE) == [
        "notify_the_data_protection_officer"
    ]


async def test_break_glass_whose_alert_cannot_be_written_sends_nothing_and_opens_nothing(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, enrolled: Enrol, oracle: Oracle,
    cases: EdgeCases,
) -> None:  # fmt: skip
    refuge = oracle.people[cases.id("refuge_adult")]
    query = "query($ref: ID!) { person(ref: $ref) { address { line1 postcode } phone } }"
    async with guarded_app(settings, engine, signing) as (_, http):
        mash = await enrolled("mash-safeguarding", http)
        token = await mash.token()
        case = {"X-Case-Reference": f"CASE-{secrets.token_hex(4)}", "X-Break-Glass-Reason": "risk to life"}
        async with engine.begin() as conn:
            await refuse_ledger_inserts(conn)
        try:
            response = await mash.post(query, {"ref": mash.ref(refuge.id)}, headers=case, token=token)
        finally:
            async with engine.begin() as conn:
                await allow_ledger_inserts(conn)
        assert (response.status_code, code_of(response)) == (503, "AUDIT_UNAVAILABLE")
        assert refuge.address["line1"] not in response.text and "data" not in response.json()
        async with engine.connect() as conn:
            opened = (
                await conn.execute(break_glass.select().where(break_glass.c.client_id == mash.client_id))
            ).all()
        assert opened == []
