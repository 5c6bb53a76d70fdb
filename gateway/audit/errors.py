"""What the ledger's operators can get wrong, as exceptions with a message that says what to do.

    AuditError
      UnknownChainError        no chain with that id
      ChainClosedError         the chain already ends in a final checkpoint
      ChainStillWritingError   the chain's writer is alive: it cannot be sealed from outside
      WitnessError             a witness cannot be written or read as configured

`AuditUnavailableError` (gateway.audit.writer) is apart: it is the request path's "no audit, no data".
"""

from __future__ import annotations


class AuditError(Exception):
    pass


class UnknownChainError(AuditError):
    pass


class ChainClosedError(AuditError):
    pass


class ChainStillWritingError(AuditError):
    pass


class WitnessError(AuditError):
    pass
