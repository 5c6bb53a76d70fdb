"""How a partner proves who it is, in the agreement a data protection officer signs.

    client_authentication: [private_key_jwt]     # the partner system signs with its own key (RFC 7523)
    token_binding: dpop                          # tokens work only with that system's key (RFC 9449)
    acting_user: verified                        # the officer is named by the partner's identity provider
    officer_issuers:                             # ... which is one of these
      - issuer: https://login.partner.example
        jwks: partner.jwks.json                  # a file the operator installs, or jwks_uri: https://...
        audience: https://gateway.example/oauth/token
        officer_claim: preferred_username

    documents: trusted                           # only documents registered for the client run

`client_secret_basic` (a shared secret) may be listed for development only. `acting_user: verified`
means the request names its officer through a token exchanged from one of the officer issuers
(RFC 8693); a header never overrides it. Break-glass needs a verified officer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from policies._yaml import Value

ClientAuthentication = Literal["private_key_jwt", "client_secret_basic"]
TokenBinding = Literal["bearer", "dpop"]
ActingUserRule = Literal["asserted", "verified"]
DocumentRule = Literal["any", "trusted"]

ACCESS_KEYS: Final = frozenset(
    {"client_authentication", "token_binding", "acting_user", "officer_issuers", "documents"}
)
_ISSUER_KEYS: Final = frozenset({"issuer", "jwks", "jwks_uri", "audience", "officer_claim"})
_JWKS_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.json$")
_CLAIM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class OfficerIssuer:
    """A partner's identity provider, trusted to name the officers of that partner only."""

    issuer: str
    audience: str
    officer_claim: str
    jwks_file: str | None  # a file name in the operator's directory of partner keys
    jwks_uri: str | None  # or where the issuer publishes them (https; http only on loopback)


@dataclass(frozen=True, slots=True)
class Access:
    client_authentication: tuple[ClientAuthentication, ...] = ("private_key_jwt",)
    token_binding: TokenBinding = "bearer"  # noqa: S105 - a word, not a secret
    acting_user: ActingUserRule = "asserted"
    officer_issuers: tuple[OfficerIssuer, ...] = ()
    documents: DocumentRule = "any"  # trusted: only documents registered for the client run

    @property
    def trusted_documents_only(self) -> bool:
        return self.documents == "trusted"

    @property
    def binds_tokens(self) -> bool:
        return self.token_binding == "dpop"  # noqa: S105

    @property
    def verifies_officers(self) -> bool:
        return self.acting_user == "verified"

    def officer_issuer(self, issuer: str) -> OfficerIssuer | None:
        return next((candidate for candidate in self.officer_issuers if candidate.issuer == issuer), None)


def parse_access(top: dict[str, Value], *, requires_acting_user: bool) -> Access:
    authentication: list[ClientAuthentication] = []
    for item in top["client_authentication"].words() if "client_authentication" in top else ():
        method = item.word(choices=("private_key_jwt", "client_secret_basic"))
        if method in authentication:
            raise item.fail("listed twice")
        authentication.append("private_key_jwt" if method == "private_key_jwt" else "client_secret_basic")
    if "client_authentication" in top and not authentication:
        raise top["client_authentication"].fail("at least one method")
    binding: TokenBinding = "bearer"
    if "token_binding" in top and top["token_binding"].word(choices=("bearer", "dpop")) == "dpop":
        binding = "dpop"
    rule: ActingUserRule = "asserted"
    if "acting_user" in top and top["acting_user"].word(choices=("asserted", "verified")) == "verified":
        rule = "verified"
    documents: DocumentRule = "any"
    if "documents" in top and top["documents"].word(choices=("any", "trusted")) == "trusted":
        documents = "trusted"
    issuers = (
        tuple(_issuer(item) for item in top["officer_issuers"].words()) if "officer_issuers" in top else ()
    )
    if len({issuer.issuer for issuer in issuers}) != len(issuers):
        raise top["officer_issuers"].fail("an issuer is listed twice")
    if rule == "verified":
        if not issuers:
            raise top["acting_user"].fail("a verified acting user needs officer_issuers")
        if not requires_acting_user:
            raise top["acting_user"].fail("a verified acting user must also be in requires")
    elif issuers:
        raise top["officer_issuers"].fail("officer issuers apply only where acting_user is 'verified'")
    return Access(
        client_authentication=tuple(authentication) or ("private_key_jwt",),
        token_binding=binding,
        acting_user=rule,
        officer_issuers=issuers,
        documents=documents,
    )


def _issuer(value: Value) -> OfficerIssuer:
    mapping = value.mapping(allowed=_ISSUER_KEYS, required=frozenset({"issuer", "audience", "officer_claim"}))
    issuer = mapping["issuer"].text()
    if not _is_url(issuer):
        raise mapping["issuer"].fail("an https URL (http only on a loopback address)")
    claim = mapping["officer_claim"].text()
    if not _CLAIM.match(claim):
        raise mapping["officer_claim"].fail("a claim name")
    if ("jwks" in mapping) == ("jwks_uri" in mapping):
        raise value.fail("give exactly one of jwks (a file name) and jwks_uri")
    jwks_file = mapping["jwks"].text() if "jwks" in mapping else None
    if jwks_file is not None and not _JWKS_FILE.match(jwks_file):
        raise mapping["jwks"].fail("a plain file name ending in .json, no directories")
    jwks_uri = mapping["jwks_uri"].text() if "jwks_uri" in mapping else None
    if jwks_uri is not None and not _is_url(jwks_uri):
        raise mapping["jwks_uri"].fail("an https URL (http only on a loopback address)")
    return OfficerIssuer(
        issuer=issuer,
        audience=mapping["audience"].text(),
        officer_claim=claim,
        jwks_file=jwks_file,
        jwks_uri=jwks_uri,
    )


def _is_url(text: str) -> bool:
    if text.startswith("https://") and len(text) > len("https://"):
        return True
    return re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)", text) is not None
