"""Partner identity: the OAuth 2.0 authorization server, access-token checks and the client registry.

Owns the token, introspection and revocation endpoints and their metadata (`server`), client
authentication by key or, for development, secret (`authentication`), access tokens issued and
checked (`tokens`), DPoP proofs and nonces (`dpop`), officers named by partners' identity providers
(`officers`), revoked tokens and disabled clients pushed to every process (`revocations`), and the
registry of partner systems, each bound to one agreement (`clients`). The gateway's own signing keys
are `gateway.keys`, shared with the audit ledger's checkpoints.

May import: `gateway.config`, `gateway.db`, `gateway.http`, `gateway.keys`, `gateway.state`, and the
layers below the gateway. Never `gateway.audit`, the endpoints, the app or the CLI: an endpoint here
reports what it did as a `TokenOutcome`, and the route that called it writes the audit event.
"""

from gateway.oauth.authentication import ClientAuthenticator
from gateway.oauth.clients import (
    ClientError,
    ClientKeysError,
    ClientRecord,
    NewClient,
    UnknownAgreementError,
    UnknownClientError,
    add_client,
    disable_client,
    get_client,
    list_clients,
    replace_keys,
)
from gateway.oauth.dpop import DPoPError, Nonces, ProofChecker, make_proof
from gateway.oauth.dpop import challenge as dpop_challenge
from gateway.oauth.officers import OfficerIssuers
from gateway.oauth.revocations import Revocations, TokenRefusedError, revoke_token
from gateway.oauth.server import (
    INTROSPECTION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    AuthorizationServer,
    TokenOutcome,
    authorization_server_metadata,
)
from gateway.oauth.tokens import AccessClaims, InvalidTokenError, Officer, TokenIssuer, TokenVerifier

__all__ = [
    "INTROSPECTION_PATH",
    "REVOCATION_PATH",
    "TOKEN_PATH",
    "AccessClaims",
    "AuthorizationServer",
    "ClientAuthenticator",
    "ClientError",
    "ClientKeysError",
    "ClientRecord",
    "DPoPError",
    "InvalidTokenError",
    "NewClient",
    "Nonces",
    "Officer",
    "OfficerIssuers",
    "ProofChecker",
    "Revocations",
    "TokenIssuer",
    "TokenOutcome",
    "TokenRefusedError",
    "TokenVerifier",
    "UnknownAgreementError",
    "UnknownClientError",
    "add_client",
    "authorization_server_metadata",
    "disable_client",
    "dpop_challenge",
    "get_client",
    "list_clients",
    "make_proof",
    "replace_keys",
    "revoke_token",
]
