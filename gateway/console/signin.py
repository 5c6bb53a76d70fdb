"""Signing in to the console: OpenID Connect against the council's identity provider, or, in the demo
only, a local sign-in that stands in for it.

The identity provider proves who the person is (authlib's Starlette client: authorization code with
PKCE, the ID token's signature, issuer, audience, expiry and nonce checked); the security-audit
agreement's `console:` block decides whether that person may read (policies.console).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Settings, SettingsError

DEMO_ISSUER: Final = "demo sign-in (gateway demo only)"


@dataclass(frozen=True, slots=True)
class DemoIdentity:
    label: str
    claims: Mapping[str, Any]


# Who the demo's sign-in can be: one member of the security team, and one council officer who is not,
# to show the agreement deciding. Synthetic, and only ever in `gateway demo`.
DEMO_IDENTITIES: Final[dict[str, DemoIdentity]] = {
    "analyst": DemoIdentity(
        "Security analyst (information-security)",
        {
            "sub": "demo-analyst",
            "email": "security.analyst@council.demo.invalid",
            "groups": ["information-security"],
        },
    ),
    "housing": DemoIdentity(
        "Housing officer (not in the security team)",
        {"sub": "demo-housing", "email": "housing.officer@council.demo.invalid", "groups": ["housing"]},
    ),
}


class SignInFailedError(Exception):
    """The identity provider's answer could not be accepted; `str()` is safe to show and log."""


def require_demo_allowed(settings: Settings) -> None:
    """The local sign-in exists only in `gateway demo`, on a loopback address: refuse to start otherwise."""
    if urlsplit(settings.issuer).scheme != "http":
        raise SettingsError("the console's demo sign-in is for `gateway demo` on a loopback address only")


class OidcSignIn:
    """The council identity provider, through authlib's Starlette client (state kept in the session)."""

    def __init__(self, settings: Settings) -> None:
        if not (
            settings.console_oidc_issuer
            and settings.console_oidc_client_id
            and settings.console_oidc_client_secret is not None
        ):
            raise SettingsError(
                "the console's sign-in needs GATEWAY_CONSOLE_OIDC_ISSUER, GATEWAY_CONSOLE_OIDC_CLIENT_ID "
                "and GATEWAY_CONSOLE_OIDC_CLIENT_SECRET together"
            )
        self.issuer = settings.console_oidc_issuer
        self._client_id = settings.console_oidc_client_id
        self._redirect_uri = f"{settings.issuer}/console/sign-in/callback"  # never from the Host header
        with warnings.catch_warnings():
            # authlib's httpx client asks for httpx2, which its own Starlette client does not use yet.
            warnings.filterwarnings("ignore", message=".*httpx2.*")
            from authlib.integrations.starlette_client import OAuth, OAuthError

        self._error_type: type[Exception] = OAuthError
        oauth = OAuth()
        oauth.register(
            "council",
            client_id=settings.console_oidc_client_id,
            client_secret=settings.console_oidc_client_secret.get_secret_value(),
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256", "timeout": 10},
        )
        client = oauth.create_client("council")
        assert client is not None
        self._client = client

    async def redirect(self, request: Request) -> Response:
        try:
            response: Response = await self._client.authorize_redirect(request, self._redirect_uri)
        except Exception as error:  # the provider's metadata unreachable or unreadable
            raise SignInFailedError(
                f"the identity provider could not be reached ({type(error).__name__})"
            ) from None
        return response

    async def claims(self, request: Request) -> dict[str, Any]:
        """The verified claims of the ID token the provider's answer carries."""
        try:
            # authlib checks `iss` only unless told: the audience must be this client (an ID token
            # made for another client, naming this one in `azp`, was accepted without it).
            token = await self._client.authorize_access_token(
                request,
                claims_options={
                    "iss": {"essential": True, "value": self.issuer},
                    "aud": {"essential": True, "value": self._client_id},
                },
            )
        except Exception as error:  # a bad signature, a wrong audience or nonce, an unreachable provider
            if isinstance(error, self._error_type):
                code = _safe(getattr(error, "error", ""))
                raise SignInFailedError(f"the identity provider refused ({code})") from None
            raise SignInFailedError(
                f"the identity provider's answer was not accepted ({type(error).__name__})"
            ) from None
        claims = token.get("userinfo")
        if not claims:
            raise SignInFailedError("the identity provider sent no ID token")
        if claims.get("iss") != self.issuer:
            raise SignInFailedError("the ID token is from another issuer")
        return dict(claims)


def _safe(code: object) -> str:
    """An OAuth error code as sent, if it looks like one (RFC 6749 5.2); else a placeholder."""
    text = str(code or "")
    return text if text.isascii() and text.replace("_", "").isalnum() and len(text) <= 40 else "error"
