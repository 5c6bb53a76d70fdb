"""Agreement reviews: the versions of every agreement the gateway ran with, and the evidence pack a
data protection officer reviews an agreement with (usage, fields, refusals, break-glass, restrictions
and objections, alerts, changes since the last review).

May import: the subsystems (`gateway.audit`, `gateway.guard`, `gateway.rights`), the base parts and the
layers below. Reads only, but for keeping agreement versions.
"""

from gateway.reviews.evidence import EvidenceError, evidence, remember_versions, render_html
from gateway.reviews.tables import agreement_versions, reviews_metadata

__all__ = [
    "EvidenceError",
    "agreement_versions",
    "evidence",
    "remember_versions",
    "render_html",
    "reviews_metadata",
]
