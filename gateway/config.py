"""One frozen Settings object, read from GATEWAY_* environment variables and passed down.

Nothing below `gateway/` reads the environment. Secrets are `SecretStr` (masked in repr) or files.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.db import check_url
from gateway.http import IPNetwork, parse_networks
from policies import AGREEMENTS_DIR
from policies.eligibility import ELIGIBILITY_DIR
from policies.retention import RETENTION_FILE

DEFAULT_STATE_DIR = Path("var")
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
COUNCIL_TIMEZONE = ZoneInfo("Europe/London")


def council_today() -> date:
    """Agreement dates are UK dates: a UTC clock would be a day out for an hour each summer night."""
    return datetime.now(COUNCIL_TIMEZONE).date()


@dataclass(frozen=True)
class WitnessTarget:
    """Where the audit witness appends: a directory of files, or a syslog server over TCP."""

    directory: Path | None = None
    syslog: tuple[str, int] | None = None


def parse_witness(value: str) -> WitnessTarget | None:
    """A directory (or file:///dir), syslog+tcp://host:port, or none/off/empty for no witness."""
    value = value.strip()
    if value.lower() in {"", "none", "off"}:
        return None
    parts = urlsplit(value)
    if parts.scheme == "syslog+tcp":
        if not parts.hostname or not parts.port:
            raise ValueError("syslog+tcp needs a host and a port: syslog+tcp://host:514")
        return WitnessTarget(syslog=(parts.hostname, parts.port))
    if parts.scheme == "file":
        return WitnessTarget(directory=Path(parts.path))
    if parts.scheme:
        raise ValueError("use a directory, file:///dir, syslog+tcp://host:port or none")
    return WitnessTarget(directory=Path(value))


class SettingsError(Exception):
    """The configuration cannot work; the message says which variable to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", frozen=True, extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_STATE_DIR}/gateway.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db",
    )
    issuer: str = Field(default="http://127.0.0.1:8000", description="Public base URL; the tokens' iss")
    audience: str | None = Field(default=None, description="The tokens' aud; default: <issuer>/graphql")
    signing_key_file: Path = Field(default=DEFAULT_STATE_DIR / "signing-key.jwk.json")
    signing_keys: SecretStr | None = Field(
        default=None,
        description="The signing keys as a JWK set in JSON, instead of a file (read at start-up only)",
    )
    ref_secret: SecretStr | None = Field(default=None, description="At least 32 bytes; or ref_secret_file")
    ref_secret_file: Path = Field(default=DEFAULT_STATE_DIR / "ref-secret")
    agreements_dir: Path = Field(default=AGREEMENTS_DIR)
    retention_file: Path = Field(
        default=RETENTION_FILE,
        description="The retention schedules and holds that `gateway retention run` applies",
    )
    eligibility_dir: Path = Field(
        default=ELIGIBILITY_DIR,
        description="The programme's eligibility rules, by which partners' reports change populations",
    )
    token_ttl_seconds: int = Field(default=300, ge=60, le=600, description="At most ten minutes")
    token_leeway_seconds: int = Field(default=30, ge=0, le=120)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # A partner's batch of reports (POST /batches): its size, its rows, and how its job is worked through.
    max_batch_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_batch_rows: int = Field(default=10_000, ge=1, le=100_000)
    batch_chunk_rows: int = Field(default=500, ge=1, le=10_000, description="Rows per step of a job")
    batch_lease_seconds: int = Field(
        default=30, ge=1, le=3_600, description="A stopped process's job is taken up after this"
    )
    max_query_tokens: int = Field(default=2_000, ge=100, le=50_000)
    db_pool_size: int = Field(default=10, ge=1, le=100)
    db_statement_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        le=600_000,
        description="PostgreSQL: longest statement a request may run; 0 none",
    )
    db_lock_timeout_ms: int = Field(
        default=3_000, ge=0, le=600_000, description="PostgreSQL: longest wait for a lock; 0 none"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(default="INFO")
    audit_witness: str = Field(
        default=str(DEFAULT_STATE_DIR / "witness"),
        description="Where checkpoints are also appended, outside the database: a directory (on other "
        "storage in production), syslog+tcp://host:port, or none",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:6379/0: the replay store and counters every process shares"
    )
    partner_jwks_dir: Path = Field(
        default=DEFAULT_STATE_DIR / "partner-jwks",
        description="Where the operator installs partner identity providers' public keys (officer_issuers)",
    )
    dpop_nonce: bool = Field(default=True, description="DPoP proofs must carry a server nonce (RFC 9449 8)")
    # Abuse resistance: defaults an agreement's `limits:` may override for its own clients.
    requests_per_second: int = Field(default=10, ge=1, le=10_000, description="Per client")
    requests_per_minute: int = Field(default=300, ge=1, le=600_000, description="Per client")
    unauthenticated_per_minute: int = Field(
        default=60, ge=1, le=600_000, description="Requests refused 401 per address before it is answered 429"
    )
    max_document_chars: int = Field(default=10_000, ge=100, le=100_000)
    break_glass_minutes: int = Field(
        default=15, ge=1, le=240, description="How long break-glass stays open for the one person it opened"
    )
    break_glass_review_hours: int = Field(
        default=24, ge=1, le=24 * 14, description="An unreviewed break-glass older than this raises an alert"
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Prometheus presents to scrape /metrics; unset: loopback callers only",
    )
    db_app_role: str | None = Field(
        default=None,
        description="PostgreSQL: the role the running gateway connects as; `gateway db upgrade` (run as "
        "the migrator role) grants it what it needs and no more",
    )
    ledger_retention_months: int = Field(
        default=84,
        ge=12,
        le=1200,
        description="Months of the audit ledger kept by `gateway audit retention` (seven years: the "
        "council's general retention schedule)",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed; "
        "empty: the TCP peer is the client",
    )

    # The security console (/console/): readers sign in with the council's identity provider.
    console_oidc_issuer: str | None = Field(
        default=None,
        description="The council identity provider (OpenID Connect issuer URL) readers sign in with; "
        "unset: nobody can sign in (the demo has a local sign-in of its own)",
    )
    console_oidc_client_id: str | None = Field(default=None, description="The console's client id there")
    console_oidc_client_secret: SecretStr | None = Field(default=None, description="... and its secret")
    console_trace_url: str = Field(
        default="",
        description="Link from an event to its trace: a URL with {trace_id}, such as "
        "https://jaeger.example/trace/{trace_id}; empty: no link",
    )
    console_session_minutes: int = Field(
        default=480, ge=5, le=24 * 60, description="A console sign-in lasts at most this long"
    )
    console_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="... and ends after this long without a request"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _text_is_text(cls, values: Any) -> Any:
        """Environment values are decoded with surrogate escapes: a byte that is not UTF-8 would pass
        as text and fail later, on every request. Refused here, naming the variable."""
        if isinstance(values, dict):
            for name, value in values.items():
                text = value.get_secret_value() if isinstance(value, SecretStr) else value
                if isinstance(text, str):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        raise ValueError(f"GATEWAY_{name.upper()} is not valid UTF-8") from None
        return values

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        return check_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("db_app_role")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not ROLE_NAME.fullmatch(value):
            raise ValueError("must be a plain role name: lower-case letters, digits and _, at most 63")
        return value

    @field_validator("issuer")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value.rstrip("/")
        if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
            return value.rstrip("/")
        raise ValueError("must be an https URL (plain http only on a loopback address)")

    @field_validator("console_oidc_issuer")
    @classmethod
    def _oidc_issuer(cls, value: str | None) -> str | None:
        if not value:
            return None
        return cls._https_unless_loopback(value)

    @field_validator("console_trace_url")
    @classmethod
    def _trace_url(cls, value: str) -> str:
        if not value:
            return ""
        parts = urlsplit(value.replace("{trace_id}", "0"))
        if value.count("{trace_id}") != 1 or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with {trace_id} in it once")
        if any(mark in value.replace("{trace_id}", "") for mark in "{}"):
            raise ValueError("may name only {trace_id}")
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        given = [self.console_oidc_issuer, self.console_oidc_client_id, self.console_oidc_client_secret]
        if any(given) and not all(given):
            raise ValueError(
                "the console's sign-in needs GATEWAY_CONSOLE_OIDC_ISSUER, GATEWAY_CONSOLE_OIDC_CLIENT_ID "
                "and GATEWAY_CONSOLE_OIDC_CLIENT_SECRET together"
            )
        return self

    @field_validator("audit_witness")
    @classmethod
    def _witness(cls, value: str) -> str:
        parse_witness(value)
        return value

    @property
    def witness(self) -> WitnessTarget | None:
        return parse_witness(self.audit_witness)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        try:
            parse_networks(value.split(","))
        except ValueError as error:
            raise ValueError(f"must be comma-separated CIDRs ({error})") from None
        return value

    @property
    def trusted_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies.split(","))

    @property
    def token_audience(self) -> str:
        return self.audience or f"{self.issuer}/graphql"

    def read_ref_secret(self) -> bytes:
        if self.ref_secret is not None:
            secret = self.ref_secret.get_secret_value().encode()
        elif self.ref_secret_file.is_file():
            secret = self.ref_secret_file.read_bytes().strip()
        else:
            raise SettingsError(
                "no ref secret: set GATEWAY_REF_SECRET or GATEWAY_REF_SECRET_FILE (at least 32 bytes)"
            )
        if len(secret) < 32:
            raise SettingsError("the ref secret must be at least 32 bytes")
        return secret


def is_loopback(host: str) -> bool:
    """localhost, or an IP address on the loopback network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
