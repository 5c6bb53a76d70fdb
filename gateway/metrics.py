"""Prometheus metrics for `/metrics`: identifiers and counts, never personal data or unbounded labels.

Labels take values from closed sets only: the endpoint (four audited routes), the outcome, the HTTP
status, the agreement (one of those loaded, else `other`), an error code (the gateway's own constants;
anything else is `other`), an alert kind, a rate-limit scope. Client ids are not labels here (the
ledger and the traces name them); operation names, document hashes, refs and addresses never are.

Each app owns its registry, so several apps in one process (tests) do not collide. Under
`gateway serve --workers N` every worker writes its values to files in the directory named by
PROMETHEUS_MULTIPROC_DIR (set by `serve` before the workers start), and a scrape of any worker
returns the sum over all of them: counters do not jump about as a balancer moves the scrape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

ENDPOINTS: Final = frozenset({"graphql", "batches", "token", "introspect", "revoke"})
OUTCOMES: Final = frozenset({"allowed", "denied", "error", "disconnected", "audit_unavailable"})
RATE_SCOPES: Final = frozenset({"client", "address", "quota"})
_CODE: Final = re.compile(r"[A-Za-z_]{1,40}")
_OTHER: Final = "other"

# Seconds: a lookup answers in milliseconds; a page of 100 in tens of them; a stalled ledger in seconds.
_LATENCY_BUCKETS: Final = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self._agreements: frozenset[str] = frozenset()
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Audited requests answered, by endpoint, agreement, outcome and HTTP status",
            ["endpoint", "agreement", "outcome", "status"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time to answer, the audit commit included, by endpoint",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.people_disclosed = Counter(
            "gateway_people_disclosed", "People sent to partners, by agreement", ["agreement"], registry=r
        )
        self.refusals = Counter(
            "gateway_refusals", "Requests refused or failed, by endpoint and error code",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "gateway_rate_limited", "Requests answered 429, by what was exceeded (client, address, quota)",
            ["scope"], registry=r,
        )  # fmt: skip
        self.audit_commit = Histogram(
            "gateway_audit_commit_seconds", "Time to commit one group of audit events",
            buckets=_COMMIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.audit_batch = Histogram(
            "gateway_audit_batch_size", "Audit events per group commit", buckets=_BATCH_BUCKETS, registry=r
        )
        self.audit_failures = Counter(
            "gateway_audit_failures", "Groups of audit events that could not be committed", registry=r
        )
        self.witness_failures = Counter(
            "gateway_audit_witness_failures", "Witness records that could not be appended yet", registry=r
        )
        self.alerts = Counter("gateway_alerts", "Security alerts raised, by kind", ["kind"], registry=r)

    def serve_agreements(self, agreements: Iterable[str]) -> None:
        """The agreement ids that may be label values (the app's, once loaded)."""
        self._agreements = frozenset(agreements)

    def agreement(self, agreement_id: str | None) -> str:
        if agreement_id is None:
            return "none"
        return agreement_id if agreement_id in self._agreements else _OTHER

    def request(
        self,
        *,
        endpoint: str,
        agreement_id: str | None,
        outcome: str,
        status: int,
        code: str | None,
        seconds: float,
        people: int,
    ) -> None:
        endpoint = endpoint if endpoint in ENDPOINTS else _OTHER
        agreement = self.agreement(agreement_id)
        outcome = outcome if outcome in OUTCOMES else _OTHER
        self._labelled(
            self.requests, endpoint, agreement, outcome, str(status) if 100 <= status < 600 else _OTHER
        ).inc()
        self._labelled(self.request_duration, endpoint).observe(seconds)
        if people:
            self._labelled(self.people_disclosed, agreement).inc(people)
        if code is not None:
            self._labelled(self.refusals, endpoint, code if _CODE.fullmatch(code) else _OTHER).inc()
        if status == 429:
            self.throttled("quota" if code == "QUOTA_EXCEEDED" else "client" if agreement_id else "address")

    def _labelled(self, metric: Any, *values: str) -> Any:
        """The metric's child for these label values, looked up once: every request counts under a few
        (the labels are bounded, so is this)."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def throttled(self, scope: str, count: int = 1) -> None:
        self.rate_limited.labels(scope if scope in RATE_SCOPES else _OTHER).inc(count)

    def alert(self, kind: str) -> None:
        self.alerts.labels(kind if _CODE.fullmatch(kind) else _OTHER).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition: this process's registry, or every worker's values."""
        directory = os.environ.get(MULTIPROCESS_DIR)
        if directory:
            combined = CollectorRegistry()
            MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)
