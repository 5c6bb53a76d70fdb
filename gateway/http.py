"""HTTP plumbing shared by the gateway's endpoints: JSON error bodies and bounded body reads."""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BodyTooLargeError(Exception):
    pass


def graphql_error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A GraphQL-shaped error body for failures that happen before GraphQL runs."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading the rest into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError
            chunks.append(chunk)
    except ClientDisconnect:
        return b""
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
