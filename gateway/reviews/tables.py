"""Every version of every agreement the gateway has run with, as its file was reviewed.

Kept from every start-up (and every evidence pack), so that a review can show what changed since the
last one as a diff of the files, and can tell a change made without a version bump.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

reviews_metadata = MetaData()

agreement_versions = Table(
    "agreement_versions",
    reviews_metadata,
    Column("agreement_id", String(64), primary_key=True),
    Column("sha256", String(64), primary_key=True),  # of the file's text
    Column("version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
)
