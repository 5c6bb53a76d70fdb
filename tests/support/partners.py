"""A partner system as a test sees it: a registered client that gets real tokens and queries.

It authenticates with a client assertion (private_key_jwt), binds its tokens to its DPoP key, answers
`use_dpop_nonce` once by trying again with the nonce it was given, and, where its agreement names
officers, exchanges an officer's token from its identity provider (a stand-in) for a gateway token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc.jwk import ECKey

from resolvers import RefCodec, RefKind
from tests.support.identity import OFFICER, TestIssuer, assertion, signed

PURPOSE = {"X-Acting-User": OFFICER, "X-Case-Reference": "CASE-2026-0042"}
ISSUER = "http://127.0.0.1:8000"  # the gateway's configured public URL in the tests (tests.conftest)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def proof(
    key: ECKey, method: str, url: str, *, token: str | None = None, nonce: str | None = None, **changes: Any
) -> str:
    """A DPoP proof (RFC 9449), written here rather than with the gateway's own helper."""
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if token is not None:
        claims["ath"] = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).decode().rstrip("=")
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return signed(key, header, claims, changes)


@dataclass
class Partner:
    http: httpx.AsyncClient
    agreement: str
    client_id: str
    key: ECKey
    dpop_key: ECKey
    refs: RefCodec
    issuer: TestIssuer | None = None  # its identity provider, where the agreement names officers
    base: str = ISSUER
    nonce: str | None = None
    token_types: dict[str, str] = field(default_factory=dict)
    # Where the agreement runs trusted documents only, each document `post` sends is registered for
    # this client first, as `gateway documents add` would (one it cannot register is sent as it is,
    # and refused DOCUMENT_NOT_TRUSTED).
    engine: Any = None

    async def token_response(self, *, officer: str = OFFICER, dpop: bool = True) -> httpx.Response:
        """The token endpoint's answer (after one retry with a fresh nonce, if it asks for one)."""
        for _ in range(2):
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion(self.client_id, self.key, self.base + "/oauth/token"),
            }
            if self.issuer is not None:
                form |= {
                    "grant_type": TOKEN_EXCHANGE,
                    "subject_token": self.issuer.token(officer),
                    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                }
            headers = (
                {"DPoP": proof(self.dpop_key, "POST", self.base + "/oauth/token", nonce=self.nonce)}
                if dpop
                else {}
            )
            response = await self.http.post("/oauth/token", data=form, headers=headers)
            self.nonce = response.headers.get("dpop-nonce", self.nonce)
            if response.status_code == 400 and response.json().get("error") == "use_dpop_nonce":
                continue
            return response
        return response

    async def token(self, *, officer: str = OFFICER) -> str:
        response = await self.token_response(officer=officer)
        assert response.status_code == 200, response.text
        body = response.json()
        token = body["access_token"]
        assert isinstance(token, str)
        self.token_types[token] = body["token_type"]
        return token

    def authorization(self, token: str) -> dict[str, str]:
        """Authorization and DPoP headers for one request to /graphql with this token."""
        if self.token_types.get(token, "DPoP") == "Bearer":
            return {"Authorization": f"Bearer {token}"}
        return {
            "Authorization": f"DPoP {token}",
            "DPoP": proof(self.dpop_key, "POST", self.base + "/graphql", token=token, nonce=self.nonce),
        }

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        purpose: bool = True,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        token = token or await self.token()
        await self.trust(query)
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        for _ in range(2):
            sent = {**self.authorization(token), **(PURPOSE if purpose else {}), **(headers or {})}
            response = await self.http.post("/graphql", json=body, headers=sent)
            self.nonce = response.headers.get("dpop-nonce", self.nonce)
            if response.status_code == 401 and 'error="use_dpop_nonce"' in response.headers.get(
                "www-authenticate", ""
            ):
                continue
            return response
        return response

    async def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """A request to `path` (its batches) with the token and a DPoP proof for that URL."""
        token = token or await self.token()
        for _ in range(2):
            auth = {
                "Authorization": f"DPoP {token}",
                "DPoP": proof(self.dpop_key, method, self.base + path, token=token, nonce=self.nonce),
            }
            sent = {**auth, **PURPOSE, **(headers or {})}
            response = await self.http.request(method, path, content=content, headers=sent)
            self.nonce = response.headers.get("dpop-nonce", self.nonce)
            if response.status_code == 401 and 'error="use_dpop_nonce"' in response.headers.get(
                "www-authenticate", ""
            ):
                continue
            return response
        return response

    async def trust(self, query: str) -> bool:
        """Register `query` for this client where its agreement needs it; whether it is registered."""
        if self.engine is None or not _trusted_only(self.agreement):
            return False
        from gateway.guard import DocumentError, add_document

        try:
            async with self.engine.begin() as conn:
                await add_document(
                    conn, client_id=self.client_id, text=query, view=_view(self.agreement),
                    added_by="tests", max_tokens=2_000,
                )  # fmt: skip
        except DocumentError:
            return False
        return True

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self.post(query, variables, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        data = body["data"]
        assert isinstance(data, dict)
        return data

    async def all_people(self, selection: str = "ref", page_size: int = 100) -> list[dict[str, Any]]:
        """Every person the `people` connection returns, following cursors to the end."""
        out: list[dict[str, Any]] = []
        after = None
        token = await self.token()
        for _ in range(1_000):
            data = await self.data(
                f"query($first: Int, $after: String) {{ people(first: $first, after: $after) "
                f"{{ edges {{ node {{ {selection} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
                {"first": page_size, "after": after},
                token=token,
            )
            connection = data["people"]
            out.extend(edge["node"] for edge in connection["edges"])
            if not connection["pageInfo"]["hasNextPage"]:
                return out
            after = connection["pageInfo"]["endCursor"]
        raise AssertionError("paging did not end")

    def person_id(self, ref: str) -> int:
        internal = self.refs.decode(RefKind.PERSON, ref)
        assert internal is not None, "the gateway returned a ref it cannot decode"
        return internal

    def ref(self, person_id: int) -> str:
        return self.refs.encode(RefKind.PERSON, person_id)


@functools.cache
def _view(agreement_id: str) -> Any:
    from policies import load_agreements
    from schema import build_view

    return build_view(load_agreements()[agreement_id])


def _trusted_only(agreement_id: str) -> bool:
    return bool(_view(agreement_id).agreement.access.trusted_documents_only)


async def enrol(
    engine: Any, http: httpx.AsyncClient, agreement_id: str, *, ref_secret: bytes, jwks_dir: Any
) -> Partner:
    """Register a new client of `agreement_id` with fresh keys, as a partner it can be driven as."""
    from gateway.oauth import add_client
    from policies import load_agreements
    from tests.support.identity import install_issuers, jwks, new_key

    agreements = load_agreements()
    key = new_key()
    async with engine.begin() as conn:
        created = await add_client(
            conn, agreement_id=agreement_id, known_agreements=set(agreements), jwks=jwks(key)
        )
    issuer = install_issuers(agreements, jwks_dir).get(agreement_id)
    return Partner(
        http,
        agreement_id,
        created.record.client_id,
        key,
        new_key(),
        RefCodec(ref_secret, agreement_id),
        issuer,
        engine=engine,
    )
