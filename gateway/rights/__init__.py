"""Data subjects' rights: the register of requests, and restrictions and objections that change what
partners see from the next request until they are lifted.

May import: the base parts (`gateway.config`, `gateway.db`) and the layers below the gateway. Each
change is written to the ledger by its caller (the command line), before the change itself.
"""

from gateway.rights.notices import NoticeStore, Recipient, notify, past_recipients
from gateway.rights.requests import (
    CLOSED_OUTCOMES,
    KINDS,
    REQUESTERS,
    NewRequest,
    RightsError,
    RightsRequest,
    check_close,
    check_new,
    close,
    get,
    list_requests,
    record,
)
from gateway.rights.tables import notifications, rights_metadata, rights_requests

__all__ = [
    "CLOSED_OUTCOMES",
    "KINDS",
    "REQUESTERS",
    "NewRequest",
    "NoticeStore",
    "Recipient",
    "RightsError",
    "RightsRequest",
    "check_close",
    "check_new",
    "close",
    "get",
    "list_requests",
    "notifications",
    "notify",
    "past_recipients",
    "record",
    "rights_metadata",
    "rights_requests",
]
