"""Partner identity: the OAuth 2.0 authorization server, access-token checks and the client registry.

Owns the token endpoint and its metadata (`server`), the verification of access tokens presented
to /graphql (`tokens`), and the registry of partner systems, each bound to one agreement (`clients`).
The gateway's own signing keys are `gateway.keys`, shared with the audit ledger's checkpoints.

May import: `gateway.config`, `gateway.db`, `gateway.http`, `gateway.keys`, and the layers below the
gateway. Never `gateway.audit`, the endpoints, the app or the CLI: the token endpoint reports what it
did as a `TokenOutcome`, and the route that called it writes the audit event.
"""

from gateway.oauth.clients import (
    ClientError,
    ClientRecord,
    NewClient,
    UnknownAgreementError,
    UnknownClientError,
    add_client,
    disable_client,
    get_client,
    list_clients,
)
from gateway.oauth.server import TOKEN_PATH, TokenEndpoint, TokenOutcome, authorization_server_metadata
from gateway.oauth.tokens import AccessClaims, InvalidTokenError, TokenVerifier

__all__ = [
    "TOKEN_PATH",
    "AccessClaims",
    "ClientError",
    "ClientRecord",
    "InvalidTokenError",
    "NewClient",
    "TokenEndpoint",
    "TokenOutcome",
    "TokenVerifier",
    "UnknownAgreementError",
    "UnknownClientError",
    "add_client",
    "authorization_server_metadata",
    "disable_client",
    "get_client",
    "list_clients",
]
