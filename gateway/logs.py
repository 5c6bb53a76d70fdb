"""JSON-lines logging with one rule: no personal data, ever.

Our own log calls pass constant messages and identifiers (client, agreement, codes, trace ids) as
`extra` fields. Exceptions are logged by type and stack frames only: an exception's message may
quote a value (a driver error naming a date of birth, say). Libraries that could log secrets or
data at debug level are held at WARNING whatever the configured level.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Final

import orjson

_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)
# authlib logs issued tokens at DEBUG; strawberry's default error handler logs query text; the SQL
# engine logs statements and, at DEBUG, rows.
_QUIET: Final = ("authlib", "strawberry", "sqlalchemy", "aiosqlite", "asyncpg", "alembic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
            entry["frames"] = traceback.format_tb(record.exc_info[2])
        # orjson: a line per request, written in C (json.dumps was a measurable share of a lookup).
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # text orjson refuses (a lone surrogate): escaped, not lost
            return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO", *, stream: Any = None) -> None:
    from gateway.telemetry import TraceIdFilter

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The access log quotes URLs with their query strings: never at INFO, whatever else is configured.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn log config that leaves formatting to our root handler."""
    return {"version": 1, "disable_existing_loggers": False}
