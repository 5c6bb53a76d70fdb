"""The register of data subjects' requests (UK GDPR Arts 15 to 21), one row per request.

No foreign key to people: the record of a request outlives the record it was about (an erasure).
"""

from __future__ import annotations

from sqlalchemy import Column, Date, DateTime, Index, Integer, MetaData, String, Table, Text

rights_metadata = MetaData()

rights_requests = Table(
    "rights_requests",
    rights_metadata,
    Column("id", String(32), primary_key=True),
    Column("person_id", Integer, nullable=False),  # the council's internal id
    Column("kind", String(16), nullable=False),  # access | rectification | erasure | restriction | objection
    Column("agreement_id", String(64), nullable=True),  # restriction/objection: one agreement, or '*'
    Column("received_on", Date, nullable=False),
    Column("requested_by", String(16), nullable=False),  # subject | representative
    Column("legal_basis", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("recorded_by", String(200), nullable=False),
    # open (access, rectification, erasure until closed) | in effect (restriction, objection) |
    # completed | refused | lifted
    Column("status", String(16), nullable=False),
    Column("outcome_note", Text, nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("closed_by", String(200), nullable=True),
    Index("ix_rights_requests_person_id", "person_id"),
)

# Art 19: each past recipient of a person's data is told of a rectification or an erasure, in its own
# view (`notifications`), by the person's ref in its own ref space. What changed is named by field, never
# the old or the new value.
notifications = Table(
    "notifications",
    rights_metadata,
    Column("id", String(32), primary_key=True),
    Column("client_id", String(64), nullable=False),  # the recipient: the OAuth client that received it
    Column("agreement_id", String(64), nullable=False),  # ... under this agreement (its ref space)
    Column("person_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # rectification | erasure
    Column("fields", Text, nullable=False),  # comma-separated view fields affected, that it received
    Column("request_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    Index("ix_notifications_recipient", "client_id", "agreement_id", "created_at"),
)
