"""The DWP refers children eligible for the two-year-old childcare offer, over HTTP with real tokens, on
SQLite and PostgreSQL: a child the council does not know gets a record, one it knows is matched to theirs,
an uncertain match waits for an officer, and never a second record silently. The answer, and the
referral's event, are the same whichever happened.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import EventDraft, LedgerWriter, subject_access_report
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.keys import SigningKeys, generate_key, write_key_file
from gateway.sharing import ContributionStore
from policies import load_agreements
from policies.eligibility import load_eligibility
from resolvers.contributions import store as store_contribution
from resolvers.models import addresses, contributions, households, people, person_records, referrals
from resolvers.retention import purge_people
from tests.conftest import FIXED_TODAY
from tests.gateway.cli.conftest import run_gateway
from tests.gateway.test_contributions import BENEFITS
from tests.support.ledger import allow_ledger_inserts, refuse_ledger_inserts
from tests.support.partners import Partner
from tests.support.processes import gateway_env
from tests.support.sharing import FAMILY, Sharing

REFER = (
    "mutation Refer($given: String!, $family: String!, $born: Date!, $line1: String!, $town: String!, "
    "$postcode: String!, $key: String!) { reportTwoYearOldOfferEligible(givenName: $given, "
    "familyName: $family, dateOfBirth: $born, addressLine1: $line1, town: $town, postcode: $postcode, "
    "idempotencyKey: $key) { id receivedAt retried } }"
)
KNOWN_CHILD = FAMILY + 1  # two, living with the family of test_contributions
NEW_CHILD = {"given": "Ada", "family": "Newcombe", "born": "2024-06-15", "line1": "7 Offer Street",
             "town": "London", "postcode": "w2 1aa"}  # fmt: skip


async def _known_child(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(people).values(
                id=KNOWN_CHILD, household_id=FAMILY, given_name="Bea", family_name="Reportley",
                date_of_birth=date(2024, 3, 3), retention_until=date(2031, 1, 1),
            )
        )  # fmt: skip


async def _refer(dwp: Partner, key: str, **changes: str) -> httpx.Response:
    return await dwp.post(REFER, {**NEW_CHILD, **changes, "key": key})


async def _referrals(sharing: Sharing) -> list[dict[str, Any]]:
    await sharing.app.state.sharing.settled()  # referrals are matched in the background, after the answer
    async with sharing.fresh.engine.connect() as conn:
        rows = await conn.execute(select(referrals).order_by(referrals.c.recorded_at))
        return [dict(r._mapping) for r in rows]


async def _people_named(sharing: Sharing, family_name: str) -> list[int]:
    await sharing.app.state.sharing.settled()
    async with sharing.fresh.engine.connect() as conn:
        found = await conn.execute(select(people.c.id).where(people.c.family_name == family_name))
        return sorted(found.scalars())


async def test_a_child_the_council_does_not_know_gets_one_record_however_often_referred(
    sharing: Sharing,
) -> None:
    engine = sharing.fresh.engine
    first = await _refer(sharing.dwp, "refer-new-0001")
    assert first.status_code == 200, first.text
    made = first.json()["data"]["reportTwoYearOldOfferEligible"]
    assert set(made) == {"id", "receivedAt", "retried"} and made["retried"] is False
    [opened] = await _people_named(sharing, "Newcombe")
    async with engine.connect() as conn:
        person = (await conn.execute(select(people).where(people.c.id == opened))).one()
        address = (
            await conn.execute(
                select(addresses).join(households, households.c.address_id == addresses.c.id)
                .where(households.c.id == person.household_id)
            )
        ).one()  # fmt: skip
        record = (
            await conn.execute(select(person_records).where(person_records.c.person_id == opened))
        ).one()
    assert (person.given_name, person.date_of_birth) == ("Ada", date(2024, 6, 15))
    assert (address.line1, address.town, address.postcode) == ("7 Offer Street", "London", "W2 1AA")
    assert (record.record_class, record.counted_from) == ("family-hub", FIXED_TODAY)
    # Referred again, as another clerk types it, under another key: the same child, no second record.
    again = await _refer(sharing.dwp, "refer-new-0002", given="ADA ", family="new-combe", postcode="W21AA")
    assert again.json()["data"]["reportTwoYearOldOfferEligible"]["retried"] is False
    assert await _people_named(sharing, "Newcombe") == [opened]
    states = [(r["state"], r["person_id"]) for r in await _referrals(sharing)]
    assert states == [("opened", opened), ("matched", opened)]


async def test_a_known_child_is_matched_and_the_answer_and_event_say_nothing_of_it(sharing: Sharing) -> None:
    engine = sharing.fresh.engine
    await _known_child(engine)
    known = await _refer(
        sharing.dwp, "refer-known-01", given="Bea", family="Reportley", born="2024-03-03",
        line1=f"{FAMILY} Report Road", postcode="W10 4CC",
    )  # fmt: skip
    unknown = await _refer(sharing.dwp, "refer-unknown-1")
    answers = [r.json()["data"]["reportTwoYearOldOfferEligible"] for r in (known, unknown)]
    assert [set(a) for a in answers] == [{"id", "receivedAt", "retried"}] * 2
    assert [r.headers.keys() - {"x-audit-event-id", "dpop-nonce"} for r in (known, unknown)] == [
        known.headers.keys() - {"x-audit-event-id", "dpop-nonce"}
    ] * 2
    assert next((r["state"], r["person_id"]) for r in await _referrals(sharing)) == ("matched", KNOWN_CHILD)
    assert await _people_named(sharing, "Reportley") == [FAMILY, KNOWN_CHILD]
    events = [r.headers["x-audit-event-id"] for r in (known, unknown)]
    async with engine.connect() as conn:
        named = await conn.execute(select(audit_disclosures).where(audit_disclosures.c.event_id.in_(events)))
        kinds = await conn.execute(
            select(audit_events.c.outcome, audit_events.c.fields_disclosed).where(
                audit_events.c.id.in_(events)
            )
        )
        assert named.all() == [] and {tuple(k) for k in kinds} == {("allowed", "")}
    report = await subject_access_report(engine, KNOWN_CHILD, agreements=load_agreements())
    assert [c["what"] for c in report.contributions] == [
        "a referral for the two-year-old childcare offer (name, date of birth, address)"
    ]


async def test_an_uncertain_match_waits_for_an_officer_who_links_it_or_opens_a_record(
    sharing: Sharing, tmp_path: Path, signing: SigningKeys
) -> None:
    engine = sharing.fresh.engine
    await _known_child(engine)
    # Born the same day and the same family name, at another address: a move, or a cousin?
    moved = await _refer(
        sharing.dwp, "refer-moved-01", given="Bea", family="Reportley", born="2024-03-03",
        line1="1 Elsewhere Lane", postcode="NW8 1AA",
    )  # fmt: skip
    cousin = await _refer(
        sharing.dwp, "refer-cousin-1", given="Cleo", family="Reportley", born="2024-03-03",
        line1="2 Elsewhere Lane", postcode="NW8 1AB",
    )  # fmt: skip
    assert moved.status_code == cousin.status_code == 200
    found = await _referrals(sharing)
    assert [(r["state"], r["person_id"], r["candidates"]) for r in found] == [
        ("review", None, str(KNOWN_CHILD)), ("review", None, str(KNOWN_CHILD)),
    ]  # fmt: skip
    assert await _people_named(sharing, "Reportley") == [FAMILY, KNOWN_CHILD]
    write_key_file(tmp_path / "signing.jwk.json", [signing.active])
    env = gateway_env(tmp_path, sharing.fresh.url)
    who = ("--acting-user", "officer@council.test.invalid")
    queue = run_gateway(env, tmp_path, "referrals", "list", "--state", "review", *who)
    assert queue.returncode == 0, queue.stderr
    assert [line.split()[2] for line in queue.stdout.splitlines()] == ["review", "review"]
    assert f"might be person {KNOWN_CHILD}" in queue.stdout
    linked = run_gateway(
        env, tmp_path, "referrals", "decide", found[0]["id"], "--person", str(KNOWN_CHILD), *who
    )
    assert linked.stdout == f"referral {found[0]['id']}: linked to person {KNOWN_CHILD}\n", linked.stderr
    opened = run_gateway(env, tmp_path, "referrals", "decide", found[1]["id"], "--new", *who)
    assert opened.returncode == 0, opened.stderr
    reportleys = await _people_named(sharing, "Reportley")
    assert len(reportleys) == 3 and opened.stdout.endswith(f"opened to person {reportleys[-1]}\n")
    # Decided once: a second decision is refused, in one line with its code.
    twice = run_gateway(env, tmp_path, "referrals", "decide", found[1]["id"], "--new", *who)
    assert (twice.returncode, twice.stderr) == (
        1, "error: this referral is opened, not in review (NOT_IN_REVIEW)\n"
    )  # fmt: skip
    neither = run_gateway(env, tmp_path, "referrals", "decide", "nope", *who)
    assert neither.stderr == "error: say either --person ID or --new (BAD_INPUT)\n"
    unknown = run_gateway(env, tmp_path, "referrals", "decide", "0" * 32, "--new", *who)
    assert unknown.stderr == "error: no referral has this id (UNKNOWN_REFERRAL)\n"
    async with engine.connect() as conn:
        decided = await conn.execute(
            select(audit_events.c.operation_name).where(audit_events.c.endpoint == "cli")
        )
        # Each command's event is written first, a refused decision's too; a record opened is named after.
        assert sorted(decided.scalars()) == sorted([
            "referrals list", f"referrals decide {found[0]['id']}", f"referrals decide {found[1]['id']}",
            f"referrals decide {found[1]['id']}: opens person {reportleys[-1]}",
            f"referrals decide {found[1]['id']}", "referrals decide " + "0" * 32,
        ])  # fmt: skip
        opened_named = await conn.execute(
            select(audit_disclosures.c.person_id)
            .join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
            .where(audit_events.c.operation_name.like("%: opens person %"))
        )
        assert opened_named.scalars().all() == [reportleys[-1]]


async def test_retries_keys_and_bad_referrals(sharing: Sharing) -> None:
    dwp, engine = sharing.dwp, sharing.fresh.engine
    first = (await _refer(dwp, "refer-retry-01")).json()["data"]["reportTwoYearOldOfferEligible"]
    again = (await _refer(dwp, "refer-retry-01")).json()["data"]["reportTwoYearOldOfferEligible"]
    assert again == {**first, "retried": True}
    for body in (
        (await _refer(dwp, "refer-retry-01", given="Other")).json(),
        # One key, one thing: a key that named a benefits report cannot name a referral, nor the reverse.
        (
            await dwp.post(
                BENEFITS, {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "refer-retry-01"}
            )
        ).json(),
    ):
        assert body["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED", body
    for change, message in (
        ({"postcode": "W2"}, "postcode must be a UK postcode, such as W10 4CC."),
        ({"born": "2022-11-22"}, "dateOfBirth must be a child's under 3, and not after today."),
        ({"born": "2026-11-23"}, "dateOfBirth must be a child's under 3, and not after today."),
        ({"given": "  "}, "givenName must be 1 to 100 of a name's letters, spaces and punctuation."),
        ({"family": "Smith2"}, "familyName must be 1 to 100 of a name's letters, spaces and punctuation."),
        ({"line1": "x" * 201}, "addressLine1 must be 1 to 200 of an address's characters."),
        ({"town": "London;"}, "town must be 1 to 100 of an address's characters."),
    ):
        body = (await _refer(dwp, f"refer-bad-{len(message)}-{next(iter(change))}", **change)).json()
        assert (body["errors"][0]["extensions"]["code"], body["errors"][0]["message"]) == (
            "BAD_USER_INPUT", message,
        )  # fmt: skip
    assert len(await _referrals(sharing)) == 1
    async with engine.connect() as conn:
        assert (await conn.execute(select(contributions))).all() == []


async def test_a_referral_whose_event_cannot_be_written_opens_nothing_until_its_retry(
    sharing: Sharing,
) -> None:
    dwp, engine = sharing.dwp, sharing.fresh.engine
    token = await dwp.token()
    async with engine.begin() as conn:
        await refuse_ledger_inserts(conn)
    try:
        refused = await dwp.post(REFER, {**NEW_CHILD, "key": "refer-down-01"}, token=token)
    finally:
        async with engine.begin() as conn:
            await allow_ledger_inserts(conn)
    assert refused.status_code == 503
    assert [r["state"] for r in await _referrals(sharing)] == ["pending"]
    assert await _people_named(sharing, "Newcombe") == []
    retried = await _refer(dwp, "refer-down-01")
    assert retried.json()["data"]["reportTwoYearOldOfferEligible"]["retried"] is True
    [row] = await _referrals(sharing)
    assert (row["state"], row["event_id"]) == ("opened", retried.headers["x-audit-event-id"])
    assert len(await _people_named(sharing, "Newcombe")) == 1


def test_only_the_dwp_may_refer() -> None:
    views = Path(__file__).parents[2] / "schema" / "views"
    referring = sorted(
        p.stem for p in views.glob("*.graphql") if "reportTwoYearOldOfferEligible" in p.read_text()
    )
    assert referring == ["dwp-worklessness"]


async def test_the_same_new_child_referred_at_once_many_times_gets_one_record(sharing: Sharing) -> None:
    dwp = sharing.dwp
    token = await dwp.token()
    answered = await asyncio.gather(
        *(dwp.post(REFER, {**NEW_CHILD, "key": f"refer-race-{n:02d}"}, token=token) for n in range(6))
    )
    assert [r.status_code for r in answered] == [200] * 6
    [opened] = await _people_named(sharing, "Newcombe")
    assert sorted(r["state"] for r in await _referrals(sharing)) == ["matched"] * 5 + ["opened"]
    assert {r["person_id"] for r in await _referrals(sharing)} == {opened}


async def test_a_purged_childs_id_is_never_given_to_the_next_child_opened(sharing: Sharing) -> None:
    """Refs and the ledger name people by id: a record opened after a purge must not take a purged id, or
    a partner's ref for the purged child would find the new one, and the new child's subject access report
    would list the other's disclosures."""
    engine = sharing.fresh.engine
    await _refer(sharing.dwp, "refer-purged-01", given="Ada", family="Firstchild")
    [first] = await _people_named(sharing, "Firstchild")
    async with engine.begin() as conn:
        highest = (await conn.execute(select(func.max(people.c.id)))).scalar_one()
        assert first == highest
        await purge_people(conn, [first])
    await _refer(sharing.dwp, "refer-purged-02", given="Ben", family="Secondchild", born="2025-01-01")
    [second] = await _people_named(sharing, "Secondchild")
    assert second > first


async def test_names_in_any_alphabet_are_told_apart_and_a_mistyped_birthday_is_not_a_new_child(
    sharing: Sharing,
) -> None:
    engine = sharing.fresh.engine
    await _known_child(engine)
    # Twins whose names are in Cyrillic: the second is not matched to the first (their names differ).
    await _refer(sharing.dwp, "refer-cyrillic-1", given="Анна", family="Иванова")
    await _refer(sharing.dwp, "refer-cyrillic-2", given="Мария", family="Иванова")
    # The known child, her birthday mistyped by a day: an officer decides, no second record.
    await _refer(
        sharing.dwp, "refer-typo-0001", given="Bea", family="Reportley", born="2024-03-04",
        line1=f"{FAMILY} Report Road", postcode="W10 4CC",
    )  # fmt: skip
    # Her name with an accent and her birthday mistyped, at her postcode: still for an officer.
    await _refer(
        sharing.dwp, "refer-typo-0002", given="Béa", family="Réport-ley", born="2024-03-13",
        line1=f"{FAMILY} Report Road", postcode="W10 4CC",
    )  # fmt: skip
    # A name in Devanagari (its vowel signs are combining marks) is a name.
    indic = await _refer(sharing.dwp, "refer-indic-001", given="रवि", family="शर्मा", born="2024-02-02")
    assert "errors" not in indic.json(), indic.json()
    # A name typed with a combining accent is the same name as the precomposed one.
    accented = await _refer(
        sharing.dwp,
        "refer-accent-01",
        given="Jose\u0301",
        family="Acute",
        born="2024-01-10",
        postcode="NW1 1AA",
    )
    assert "errors" not in accented.json(), accented.json()
    found = await _referrals(sharing)
    [anna] = await _people_named(sharing, "Иванова")
    assert [(r["state"], r["person_id"], r["candidates"]) for r in found] == [
        ("opened", anna, None), ("review", None, str(anna)), ("review", None, str(KNOWN_CHILD)),
        ("review", None, str(KNOWN_CHILD)), ("opened", found[4]["person_id"], None),
        ("opened", found[5]["person_id"], None),
    ]  # fmt: skip
    async with engine.connect() as conn:
        stored = (
            await conn.execute(select(people.c.given_name).where(people.c.family_name == "Acute"))
        ).scalar_one()
    assert stored == "Jos\u00e9"


async def test_one_key_names_one_thing_even_when_a_report_and_a_referral_race_for_it(
    sharing: Sharing,
) -> None:
    dwp, engine = sharing.dwp, sharing.fresh.engine
    token = await dwp.token()
    for n in range(4):
        key = f"refer-race-key-{n}"
        answered = await asyncio.gather(
            dwp.post(REFER, {**NEW_CHILD, "key": key}, token=token),
            dwp.post(
                BENEFITS, {"ref": dwp.ref(FAMILY), "on": True, "asOf": f"2026-10-0{n + 1}", "key": key},
                token=token,
            ),
        )  # fmt: skip
        codes = sorted(
            ("errors" in r.json() and r.json()["errors"][0]["extensions"]["code"]) or "ok" for r in answered
        )
        assert codes == ["IDEMPOTENCY_KEY_REUSED", "ok"], [r.json() for r in answered]
    async with engine.connect() as conn:
        made = (await conn.execute(select(func.count()).select_from(contributions))).scalar_one()
    assert made + len(await _referrals(sharing)) == 4


async def test_a_referral_left_pending_by_a_stopped_process_is_matched_by_the_next(
    sharing: Sharing, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sharing.fresh.engine

    async def stopped(self: ContributionStore, event_id: str | None) -> int:
        raise RuntimeError("the process stopped here")

    with monkeypatch.context() as patched:
        patched.setattr(ContributionStore, "_match", stopped)
        answered = await _refer(sharing.dwp, "refer-stopped-1")
        await sharing.app.state.sharing.settled()  # the process "stops" as it matches
    assert answered.status_code == 200
    assert [r["state"] for r in await _referrals(sharing)] == ["pending"]
    reports, referred = await ContributionStore(engine, load_eligibility(), lambda: FIXED_TODAY).sweep()
    assert (reports, referred) == (0, 1)
    assert [r["state"] for r in await _referrals(sharing)] == ["opened"]


async def test_a_report_whose_answer_was_refused_never_counts_even_after_a_sweep(sharing: Sharing) -> None:
    """A request that reported and was then refused (over its quota, say) wrote an event naming no one: its
    report stays pending for ever, and the start-up sweep, which counts what a stopped process left, does not
    count it. One answered 200 whose process stopped before counting it is counted by the sweep."""
    dwp, engine = sharing.dwp, sharing.fresh.engine
    store = ContributionStore(engine, load_eligibility(), lambda: FIXED_TODAY)
    writer = LedgerWriter(engine, signing=SigningKeys.from_keys([generate_key()]), writer="test", heads=False)
    try:
        for status, key in ((429, "refused-0001"), (200, "answered-0001")):
            draft = EventDraft(endpoint="graphql", outcome="denied" if status == 429 else "allowed",
                               http_status=status, latency_us=1, client_id=dwp.client_id)  # fmt: skip
            async with engine.begin() as conn:
                await store_contribution(
                    conn, person_id=FAMILY, indicator="out_of_work_benefits", observed_on=date(2026, 10, 1),
                    flag=status == 200, percent=None, term=None, client_id=dwp.client_id,
                    agreement_id="dwp-worklessness", acting_user=None, event_id=draft.id, idempotency_key=key,
                    fingerprint=key,
                )  # fmt: skip
            await writer.record(draft)
    finally:
        await writer.close()
    assert await store.sweep() == (1, 0)
    async with engine.connect() as conn:
        kept = await conn.execute(select(contributions.c.idempotency_key, contributions.c.state))
        assert sorted(kept.all()) == [("answered-0001", "recorded"), ("refused-0001", "pending")]


@pytest.mark.parametrize(
    ("stored", "referred"),
    [
        (("Zoë", "Müller"), ("Zoe", "Muller")),
        (("Ayşe", "ÖZTÜRK"), ("Ayşe", "Öztürk")),
        (("Анна", "ИВАНОВА"), ("Анна", "Иванова")),
        (("Jo", "Strauß"), ("Jo", "STRAUSS")),
    ],
)
async def test_the_same_names_however_written_born_a_day_off_elsewhere_go_to_an_officer(
    sharing: Sharing, stored: tuple[str, str], referred: tuple[str, str]
) -> None:
    """The near match on another birthday compares names as matching does (case in every alphabet, accents,
    ß): never a second record for a known child because the database folds only ASCII."""
    async with sharing.fresh.engine.begin() as conn:
        await conn.execute(
            insert(people).values(
                id=KNOWN_CHILD, household_id=FAMILY, given_name=stored[0], family_name=stored[1],
                date_of_birth=date(2024, 3, 3), retention_until=date(2031, 1, 1),
            )
        )  # fmt: skip
    await _refer(sharing.dwp, "refer-folded-01", given=referred[0], family=referred[1], born="2024-03-04")
    [found] = await _referrals(sharing)
    assert (found["state"], found["candidates"]) == ("review", str(KNOWN_CHILD))
