"""HTTP plumbing shared by the gateway's endpoints: JSON error bodies, bounded body reads, JSON that
is valid Unicode, the media type an Accept header chooses, and the client's address as far as it can
be believed.

Exceptions:
    BodyTooLargeError        the body is larger than the endpoint takes
    ClientDisconnectedError  the client went away before its body was read
    InvalidJsonError         the body is not JSON, or holds text that is not valid Unicode
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Final, TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Not an HTTP status anyone receives: the client closed the connection first (nginx's 499).
CLIENT_CLOSED_REQUEST: Final = 499
CLIENT_DISCONNECTED: Final = "CLIENT_DISCONNECTED"  # the audit event's code for such a request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
APPLICATION_JSON: Final = "application/json"
_R = TypeVar("_R", bound=Response)


class BodyTooLargeError(Exception):
    pass


class ClientDisconnectedError(Exception):
    pass


class InvalidJsonError(Exception):
    pass


def graphql_error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    media_type: str = APPLICATION_JSON,
) -> JSONResponse:
    """A GraphQL-shaped error body for failures that happen before GraphQL runs."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    response = OrjsonResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})
    return with_media_type(response, media_type)


def with_media_type(response: _R, media_type: str) -> _R:
    """`response`, a JSON body, declared as `media_type` in UTF-8; application/json is left exactly as
    Starlette writes it (no charset), as every answer was before another type could be asked for."""
    if media_type != APPLICATION_JSON:
        response.headers["content-type"] = f"{media_type}; charset=utf-8"
    return response


class OrjsonResponse(JSONResponse):
    """As Starlette's JSONResponse writes it (compact, UTF-8, no NaN), written by orjson in C."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return OrjsonResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


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
        raise ClientDisconnectedError from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body as JSON, refusing what Python's parser accepts but nothing downstream can store or
    send back: lone UTF-16 surrogates (`"\\ud800"` decodes, then fails every `str.encode`), NUL,
    NaN and Infinity, and nesting deep enough to exhaust the parser's recursion."""
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJsonError from None
    if not is_valid_unicode(payload):
        raise InvalidJsonError
    return payload


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def is_valid_unicode(value: Any) -> bool:
    """True when every string in a decoded JSON value (keys included) encodes as UTF-8 and holds no
    NUL: no name, date or reference has one, and PostgreSQL text cannot store it."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not _encodes(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs or single addresses; ValueError names the first that is neither."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def client_address(request: Request, trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """The address of the client, as far as it can be believed.

    The peer of the TCP connection, unless that peer is a trusted proxy: then `X-Forwarded-For` is
    read from the right (each proxy appends the address it received from), skipping trusted proxies,
    and the first address that is not one is the client. An entry that is not an IP address ends the
    walk at the nearest address known good, so a forged or garbled header can only ever name a
    proxy, never a made-up client. What is returned is always a valid IP address, or None when the
    server was given no peer address at all (a Unix socket).
    """
    peer = _peer_ip(request.client.host) if request.client else None
    if peer is None or not _within(peer, trusted_proxies):
        return None if peer is None else str(peer)
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    believed = peer
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break
        believed = address
        if not _within(address, trusted_proxies):
            break
    return str(believed)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, or None. An IPv6 scope id (`fe80::1%eth0`) would let any text through: refused."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# The TCP peers (the same few ask again and again) parsed once each; never X-Forwarded-For's hops,
# whose text the caller chooses.
_peer_ip = lru_cache(maxsize=4096)(_ip)


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def negotiate(accept: Sequence[str], offered: Sequence[str]) -> str | None:
    """The type of `offered` that the Accept header values `accept` prefer (RFC 9110 12.5.1), or None
    when they accept none of them (406). No header, or only empty ones, accepts the first.

    Each offered type takes the quality of the most specific range that covers it (`type/subtype`,
    then `type/*`, then `*/*`); `q=0` refuses it. The highest quality wins; on a tie, a type named
    outright beats one a wildcard covers, then the one listed first, then the first offered (so
    `*/*` and `application/*` choose `offered[0]`). Parameters other than `q` are not compared, and a
    range that cannot be read (no `/`, a `q` that is not a number from 0 to 1) is passed over.
    """
    items = [item for value in accept for item in value.split(",") if item.strip()]
    if not items:
        return offered[0] if offered else None
    ranges = [parsed for parsed in map(_media_range, items) if parsed is not None]
    best: tuple[float, int, int, int] | None = None
    chosen = None
    for preference, candidate in enumerate(offered):
        covering = [
            (specificity, quality, -position)
            for position, (media_range, quality) in enumerate(ranges)
            if (specificity := _specificity(media_range, candidate)) >= 0
        ]
        if not covering:
            continue
        specificity, quality, position = max(covering)
        rank = (quality, specificity, position, -preference)
        if quality > 0 and (best is None or rank > best):
            best, chosen = rank, candidate
    return chosen


def _media_range(item: str) -> tuple[str, float] | None:
    """`type/subtype` (lower case) and its quality, or None for a range that cannot be read."""
    media_range, *parameters = (part.strip() for part in item.split(";"))
    kind, slash, subtype = media_range.lower().partition("/")
    if not slash or not kind or not subtype or (kind == "*" and subtype != "*"):
        return None
    quality = 1.0
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None
            if not 0 <= quality <= 1:  # NaN included
                return None
    return f"{kind}/{subtype}", quality


def _specificity(media_range: str, offered: str) -> int:
    """2 when the range names the type, 1 for its `type/*`, 0 for `*/*`, -1 when it does not cover it."""
    if media_range == offered:
        return 2
    if media_range == "*/*":
        return 0
    return 1 if media_range == offered.partition("/")[0] + "/*" else -1


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
