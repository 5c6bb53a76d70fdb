"""The council's record model, as SQLAlchemy Core tables.

The schema is created by the migrations in `gateway/migrations/`, never by `metadata.create_all`:
the same migrations run on the embedded SQLite file and on PostgreSQL.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
)

NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# The ten Supporting Families outcomes (programme from October 2022), as assessment columns.
OUTCOMES: Final[tuple[tuple[str, str], ...]] = (
    ("need_education", "Getting a good education"),
    ("need_early_years", "Good early years development"),
    ("need_health", "Improved mental and physical health"),
    ("need_substance_use", "Promoting recovery and reducing harm from substance use"),
    ("need_family_relationships", "Improved family relationships"),
    ("need_safe_from_exploitation", "Children safe from abuse and exploitation"),
    ("need_crime_prevention", "Crime prevention and tackling crime"),
    ("need_domestic_abuse", "Safe from domestic abuse"),
    ("need_housing", "Secure housing"),
    ("need_financial_stability", "Financial stability"),
)
ELIGIBILITY_THRESHOLD: Final = 3  # needs among the ten outcomes for a family to be eligible

addresses = Table(
    "addresses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # A UPRN has up to 12 digits: it overflows a 32-bit integer, so it is kept (and served) as text.
    Column("uprn", String(12), nullable=True, unique=True),
    Column("line1", String(200), nullable=False),
    Column("line2", String(200), nullable=True),
    Column("town", String(100), nullable=False),
    Column("postcode", String(8), nullable=False),
    CheckConstraint("uprn IS NULL OR length(uprn) BETWEEN 1 AND 12", name="uprn_length"),
)

households = Table(
    "households",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("address_id", Integer, ForeignKey("addresses.id"), nullable=False),
)

people = Table(
    "people",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("household_id", Integer, ForeignKey("households.id"), nullable=False, index=True),
    Column("given_name", String(100), nullable=False),
    Column("family_name", String(100), nullable=False),
    Column("date_of_birth", Date, nullable=False),
    Column("phone", String(20), nullable=True),
    Column("email", String(254), nullable=True),
    Column("school", String(200), nullable=True),
    # Refuge, witness protection: no location or contact detail ever leaves for this person.
    Column("protected_address", Boolean, nullable=False, server_default=false()),
    # Restriction of processing (UK GDPR Art 18): invisible to every partner while set.
    Column("restricted", Boolean, nullable=False, server_default=false()),
    # After this date the record is out of every view, whatever else is true of it.
    Column("retention_until", Date, nullable=False),
    # Stops deletion at the end of retention (e.g. the Goddard Inquiry hold); does not make anyone visible.
    Column("legal_hold", Boolean, nullable=False, server_default=false()),
)
Index("ix_people_name_dob", func.lower(people.c.family_name), people.c.date_of_birth)
Index("ix_people_date_of_birth", people.c.date_of_birth)  # a referral's candidates: born the same day

assessments = Table(
    "assessments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # The family's current assessment: one per household.
    Column("household_id", Integer, ForeignKey("households.id"), nullable=False, unique=True),
    Column("assessed_on", Date, nullable=False),
    *(Column(name, Boolean, nullable=False, server_default=false()) for name, _ in OUTCOMES),
    # The eligibility result recorded by the assessor under the rules in force at the time.
    Column("eligible", Boolean, nullable=False),
    Column("coordinated_support", Boolean, nullable=False, server_default=false()),
)

objections = Table(
    "objections",
    metadata,
    Column("person_id", Integer, ForeignKey("people.id"), primary_key=True),
    # The agreement objected to, or '*' for every one: an objection only takes effect where the
    # agreement honours it.
    Column("agreement_id", String(64), primary_key=True),
    Column("recorded_on", Date, nullable=False),
)

# Restriction of processing (UK GDPR Art 18): the person is out of the agreement's view ('*': out of
# every view) from the next request until it is lifted, whatever the agreement says of objections.
restrictions = Table(
    "restrictions",
    metadata,
    Column("person_id", Integer, ForeignKey("people.id"), primary_key=True),
    Column("agreement_id", String(64), primary_key=True),  # or '*': every agreement
    Column("recorded_on", Date, nullable=False),
)

EVERY_AGREEMENT = "*"  # an objection or restriction that reaches every agreement

# Each person's records by class (policies/retention.yaml): the date the class's schedule counts from
# (the end of the programme, the last contact, the date of birth, the referral), or NULL while the
# record is still open, which is never due. A person with no row here is never purged (unclassified).
person_records = Table(
    "person_records",
    metadata,
    Column("person_id", Integer, ForeignKey("people.id"), primary_key=True),
    Column("record_class", String(64), primary_key=True),
    Column("counted_from", Date, nullable=True),
    Index("ix_person_records_record_class", "record_class"),
)


# Two-way sharing: an indicator a partner reported about a person, with its provenance. Only 'recorded'
# rows (the request's audit event written) are evidence; a retry with the same key gets the first answer.
contributions = Table(
    "contributions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("person_id", Integer, ForeignKey("people.id"), nullable=False, index=True),
    Column("household_id", Integer, nullable=False, index=True),
    Column("indicator", String(64), nullable=False),
    Column("observed_on", Date, nullable=False),
    Column("flag", Boolean, nullable=True),
    Column("percent", Numeric(5, 2), nullable=True),
    Column("term", String(32), nullable=True),
    Column("client_id", String(64), nullable=False),
    Column("agreement_id", String(64), nullable=False),
    Column("acting_user", String(200), nullable=True),
    Column("event_id", String(32), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # pending | recorded
    Column("idempotency_key", String(200), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    UniqueConstraint("client_id", "idempotency_key", name="uq_contributions_client_id"),
)

# Each family's eligibility timeline under the programme rules, from the assessor's needs and the
# recorded contributions (policies.eligibility.timeline): kept only for families with contributions.
ELIGIBLE, CRITERION = "eligible", "criterion"
eligibility_intervals = Table(
    "eligibility_intervals",
    metadata,
    Column("household_id", Integer, ForeignKey("households.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_until", Date, nullable=True),  # the first day it no longer holds; NULL: no end foreseen
    PrimaryKeyConstraint("household_id", "kind", "valid_from", name="pk_eligibility_intervals"),
)

# A partner's referral of someone the council may not yet know (the DWP's two-year-old offer): what it
# sent, its provenance, and what became of it once its request's event was written: matched to the one
# person it is, a record opened for someone the council did not know, or left for an officer to decide
# (review) and then linked. Never a second record for someone already known, silently.
PENDING_REFERRAL, MATCHED, OPENED, REVIEW, LINKED = "pending", "matched", "opened", "review", "linked"
referrals = Table(
    "referrals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("given_name", String(100), nullable=False),
    Column("family_name", String(100), nullable=False),
    Column("date_of_birth", Date, nullable=False),
    Column("address_line1", String(200), nullable=False),
    Column("town", String(100), nullable=False),
    Column("postcode", String(8), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("agreement_id", String(64), nullable=False),
    Column("acting_user", String(200), nullable=True),
    Column("event_id", String(32), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("person_id", Integer, ForeignKey("people.id"), nullable=True, index=True),
    Column("candidates", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("idempotency_key", String(200), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    UniqueConstraint("client_id", "idempotency_key", name="uq_referrals_client_id"),
)

# One idempotency key of a client names one thing it sent: a report (contributions) or a referral.
CONTRIBUTION_KEY, REFERRAL_KEY = "contribution", "referral"
report_keys = Table(
    "report_keys",
    metadata,
    Column("client_id", String(64), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    PrimaryKeyConstraint("client_id", "idempotency_key", name="pk_report_keys"),
)

# The highest id ever given to a person, household or address, purged ones included (resolvers.referrals).
id_high_water = Table(
    "id_high_water",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_id", Integer, nullable=False),
)

# A partner's batch of reports: one job, its rows and each row's result. The rows' reports wait under the
# batch's one audit event (event_id, known ahead), written when the last row is done.
RECEIVED, RUNNING, SEALING, DONE, STOPPED = "received", "running", "sealing", "done", "stopped"
batches = Table(
    "batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("agreement_id", String(64), nullable=False),
    Column("acting_user", String(200), nullable=True),
    Column("officer_issuer", String(300), nullable=True),
    Column("case_reference", String(200), nullable=True),
    Column("format", String(8), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("processed", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("stop_code", String(64), nullable=True),
    Column("event_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("upload_event_id", String(32), nullable=False),
    UniqueConstraint("client_id", "idempotency_key", name="uq_batches_client_id"),
)
batch_rows = Table(
    "batch_rows",
    metadata,
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False),
    Column("row_no", Integer, nullable=False),
    Column("body", Text, nullable=True),
    Column("status", String(16), nullable=True),
    Column("code", String(64), nullable=True),
    Column("message", String(300), nullable=True),
    Column("result_id", String(32), nullable=True),
    Column("person_id", Integer, nullable=True),
    PrimaryKeyConstraint("batch_id", "row_no", name="pk_batch_rows"),
)
