"""/batches: a partner uploads a batch of reports and follows the job (gateway.bulk works through it).

    POST /batches                 the batch as the body: NDJSON (application/x-ndjson) or CSV (text/csv),
                                  with an Idempotency-Key header; 202 and the job (200 and the same job when
                                  the same upload is sent again under its key)
    GET  /batches/{id}            the job's progress
    GET  /batches/{id}/results    each row done so far, as NDJSON: accepted with the id of what it made, or
                                  rejected with a code and a message

The caller is established exactly as for /graphql (token, DPoP proof for this URL, client state, rate
limits, purpose headers and the agreement's decision); only an agreement that `contributes` may upload.
Each of these requests has its own audit event, like any other; the batch's reports have theirs when the
last row is done. A job is its uploader's alone: another's and none are answered alike, 404.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from gateway.bulk import (
    FORMATS,
    BatchError,
    BatchRunner,
    Upload,
    content_hash,
    create_batch,
    find_batch,
    parse_rows,
    progress,
    row_results,
)
from gateway.graphql import GraphQLEndpoint, Outcome, Refusal, answered
from gateway.http import (
    CLIENT_CLOSED_REQUEST,
    CLIENT_DISCONNECTED,
    BodyTooLargeError,
    ClientDisconnectedError,
    graphql_error_response,
    json_response,
    media_type,
    read_body,
)

log = logging.getLogger("gateway.batches")

PATH: Final = "/batches"
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,190}$")
_ID = re.compile(r"^[0-9a-f]{32}$")


class BatchEndpoint:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        graphql: GraphQLEndpoint,
        runner: BatchRunner,
        issuer: str,
        max_rows: int,
        max_bytes: int,
    ) -> None:
        self._engine = engine
        self._graphql = graphql
        self.runner = runner
        self._issuer = issuer
        self._max_rows = max_rows
        self._max_bytes = max_bytes

    async def handle(self, request: Request) -> tuple[Response, Outcome]:
        """Never raises: whatever happens, the outcome keeps what was verified before it happened."""
        outcome = Outcome()
        batch_id = request.path_params.get("batch_id")
        results = request.url.path.endswith("/results")
        outcome.operation_name = (
            "upload batch" if batch_id is None else "batch results" if results else "batch progress"
        )
        response = await answered(
            self._handle(request, outcome, batch_id, results=results), outcome, endpoint="batch"
        )
        return response, outcome

    async def _handle(
        self, request: Request, outcome: Outcome, batch_id: str | None, *, results: bool
    ) -> Response:
        expected = "POST" if batch_id is None else "GET"
        if request.method != expected:
            raise _refused(405, "METHOD_NOT_ALLOWED", f"Use {expected}.", headers={"Allow": expected})
        view, _, nonce = await self._graphql.authorise(request, outcome, url=self._issuer + request.url.path)
        if not view.agreement.contributes:
            raise _refused(403, "FORBIDDEN", "Your agreement names no reports to send.")
        if request.url.query:
            raise _refused(400, "BAD_REQUEST", "Send nothing in the URL.")
        if batch_id is None:
            response = await self._upload(request, outcome)
        else:
            response = await self._read(outcome, batch_id, results=results)
        if nonce is not None:
            response.headers["DPoP-Nonce"] = nonce
        outcome.executed = True
        return response

    async def _upload(self, request: Request, outcome: Outcome) -> Response:
        fmt = FORMATS.get(media_type(request))
        if fmt is None:
            raise _refused(
                415, "UNSUPPORTED_MEDIA_TYPE", "Send the batch as application/x-ndjson or text/csv."
            )
        key = request.headers.get("idempotency-key", "")
        if not _KEY.match(key):
            raise _refused(
                400,
                "BAD_REQUEST",
                "Send an Idempotency-Key header: 8 to 190 letters, digits, '.', '_', ':' or '-'.",
            )
        try:
            body = await read_body(request, limit=self._max_bytes)
        except BodyTooLargeError:
            raise _refused(
                413, "PAYLOAD_TOO_LARGE", f"A batch may be at most {self._max_bytes} bytes."
            ) from None
        except ClientDisconnectedError:
            raise _refused(CLIENT_CLOSED_REQUEST, CLIENT_DISCONNECTED, "The client disconnected.") from None
        outcome.document_sha256 = content_hash(body)
        try:
            rows = parse_rows(body, fmt, max_rows=self._max_rows)
            agreement = outcome.agreement
            assert agreement is not None and outcome.client_id is not None
            job, new = await create_batch(
                self._engine,
                Upload(
                    client_id=outcome.client_id, agreement_id=agreement.id,
                    acting_user=outcome.purpose.acting_user,
                    officer_issuer=outcome.officer.issuer if outcome.officer else None,
                    case_reference=outcome.purpose.case_reference, format=fmt, idempotency_key=key,
                    content_sha256=outcome.document_sha256, rows=rows, upload_event_id=outcome.event_id,
                ),
            )  # fmt: skip
        except BatchError as refused:
            raise _refused(refused.status, refused.code, refused.message) from None
        # Started once this request's event is written (`recorded`); an upload answered 503 (its event not
        # written) stays `received` until it is sent again, and `gateway retention run` deletes it after
        # RECEIVED_KEEP_DAYS if it never is. A process that stopped between the event and the start: the next
        # start-up starts it.
        outcome.batch_id = job["id"]
        return json_response(
            progress(job), status=202 if new else 200, headers={"Location": f"{PATH}/{job['id']}"}
        )

    async def recorded(self, outcome: Outcome) -> None:
        """The request's event is written: the upload's job may start (or go on, if its process stopped)."""
        if outcome.batch_id is None:
            return
        await self.runner.accepted(outcome.batch_id)

    async def _read(self, outcome: Outcome, batch_id: str, *, results: bool) -> Response:
        job = (
            await find_batch(self._engine, batch_id, str(outcome.client_id)) if _ID.match(batch_id) else None
        )
        if job is None:
            raise _refused(404, "NOT_FOUND", "No batch of yours has this id.")
        self.runner.resume_if_stale(job)
        if not results:
            return json_response(progress(job))
        lines = b"".join(orjson.dumps(row) + b"\n" for row in await row_results(self._engine, batch_id))
        return Response(
            lines,
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Batch-State": str(job["state"])},
        )


def _refused(status: int, code: str, message: str, headers: Mapping[str, Any] | None = None) -> Refusal:
    return Refusal(graphql_error_response(status, code, message, headers=dict(headers or {})), code)
