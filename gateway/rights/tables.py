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
