"""The security console: web pages under /console/ over the access ledger, for the security team.

A timeline of events with filters, an event's page with its trace link, a person's disclosure
history, the alert queue, the break-glass review queue, chain verification with the witness, the
agreement register, charts, and the reader's own reads. Readers sign in with the council's identity
provider (OpenID Connect; the security-audit agreement decides who may read); every page and action
is recorded in the ledger before it is answered.

May import: the subsystems (`gateway.audit`, `gateway.guard`), the base parts and the layers below.
"""

from gateway.console.pages import Console
from gateway.console.signin import require_demo_allowed

__all__ = ["Console", "require_demo_allowed"]
