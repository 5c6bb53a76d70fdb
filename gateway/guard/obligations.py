"""Obligations that come with an allowed decision: each is carried out, or the request fails.

`unmet` names those a request has not discharged by the time its answer would leave: the event that
will be written must record the disclosure (a ledger to write it to), the acting user and the case
reference, and a security alert must have been raised. An obligation this code does not know is
unmet by definition: a policy that asks for something new fails closed until the gateway does it.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies import Decision, Obligation


@dataclass(frozen=True, slots=True)
class Discharged:
    """What the request did, as far as obligations are concerned."""

    recorded: bool  # the event (with its disclosures) goes to a ledger before the answer leaves
    acting_user: str | None
    case_reference: str | None
    alert_id: str | None


def unmet(decision: Decision, done: Discharged) -> list[str]:
    missing = []
    for obligation in sorted(decision.obligations):
        if obligation is Obligation.RECORD_DISCLOSURE:
            ok = done.recorded
        elif obligation is Obligation.RECORD_ACTING_USER:
            ok = done.recorded and bool(done.acting_user)
        elif obligation is Obligation.RECORD_CASE_REFERENCE:
            ok = done.recorded and bool(done.case_reference)
        elif obligation is Obligation.ALERT_SECURITY:
            ok = done.alert_id is not None
        else:
            ok = False
        if not ok:
            missing.append(str(obligation))
    return missing
