"""A partner system as a test sees it: a registered client that gets real tokens and queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from resolvers import RefCodec, RefKind

PURPOSE = {"X-Acting-User": "officer-1234", "X-Case-Reference": "CASE-2026-0042"}


@dataclass
class Partner:
    http: httpx.AsyncClient
    agreement: str
    client_id: str
    secret: str
    refs: RefCodec

    async def token(self) -> str:
        response = await self.http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(self.client_id, self.secret)
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert isinstance(token, str)
        return token

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        purpose: bool = True,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        sent = {
            "Authorization": f"Bearer {token or await self.token()}",
            **(PURPOSE if purpose else {}),
            **(headers or {}),
        }
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await self.http.post("/graphql", json=body, headers=sent)

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
        for _ in range(1_000):
            data = await self.data(
                f"query($first: Int, $after: String) {{ people(first: $first, after: $after) "
                f"{{ edges {{ node {{ {selection} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
                {"first": page_size, "after": after},
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
