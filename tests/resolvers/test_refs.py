"""Per-partner refs: reversible only with the secret, stable per partner, unlinkable across partners."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from resolvers import RefCodec, RefKind
from resolvers.refs import MIN_SECRET_BYTES

SECRET = b"a test ref secret that is at least thirty-two bytes long"
POLICE = "police-prevention"
DWP = "dwp-worklessness"
IDS = [0, 1, 42, 900_001, 2**31, 2**32 + 7, 2**63 - 1]


@pytest.fixture
def codec() -> RefCodec:
    return RefCodec(SECRET, POLICE)


@pytest.mark.parametrize("internal_id", IDS)
@pytest.mark.parametrize("kind", list(RefKind))
def test_round_trip(codec: RefCodec, kind: RefKind, internal_id: int) -> None:
    ref = codec.encode(kind, internal_id)
    assert ref.startswith(f"{kind.value}_")
    assert len(ref) == len(kind.value) + 1 + 32
    assert codec.decode(kind, ref) == internal_id


def test_the_same_id_gives_the_same_ref_for_one_partner(codec: RefCodec) -> None:
    again = RefCodec(SECRET, POLICE)
    assert codec.encode(RefKind.PERSON, 17) == codec.encode(RefKind.PERSON, 17)
    assert again.encode(RefKind.PERSON, 17) == codec.encode(RefKind.PERSON, 17)


def test_different_ids_give_different_refs(codec: RefCodec) -> None:
    refs = {codec.encode(RefKind.PERSON, i) for i in range(500)}
    assert len(refs) == 500


def test_refs_differ_across_partners_and_do_not_decode_there(codec: RefCodec) -> None:
    other = RefCodec(SECRET, DWP)
    for internal_id in IDS:
        mine = codec.encode(RefKind.PERSON, internal_id)
        theirs = other.encode(RefKind.PERSON, internal_id)
        assert mine != theirs
        assert mine[4:] != theirs[4:]
        assert other.decode(RefKind.PERSON, mine) is None
        assert codec.decode(RefKind.PERSON, theirs) is None


def test_a_different_secret_gives_unrelated_refs(codec: RefCodec) -> None:
    rotated = RefCodec(SECRET[::-1], POLICE)
    ref = codec.encode(RefKind.PERSON, 5)
    assert rotated.encode(RefKind.PERSON, 5) != ref
    assert rotated.decode(RefKind.PERSON, ref) is None


@pytest.mark.parametrize("issued", list(RefKind))
@pytest.mark.parametrize("asked", list(RefKind))
def test_a_ref_of_one_kind_is_not_a_ref_of_another(codec: RefCodec, issued: RefKind, asked: RefKind) -> None:
    ref = codec.encode(issued, 1234)
    if issued is asked:
        assert codec.decode(asked, ref) == 1234
    else:
        assert codec.decode(asked, ref) is None
        assert codec.encode(asked, 1234)[4:] != ref[4:]


@pytest.mark.parametrize("asked", [RefKind.FAMILY, RefKind.CURSOR])
def test_swapping_the_prefix_does_not_turn_a_person_ref_into_another_kind(
    codec: RefCodec, asked: RefKind
) -> None:
    body = codec.encode(RefKind.PERSON, 1234).partition("_")[2]
    assert codec.decode(asked, f"{asked.value}_{body}") is None


def _flip(ref: str, index: int) -> str:
    char = ref[index]
    replacement = "A" if char != "A" else "B"
    return ref[:index] + replacement + ref[index + 1 :]


def test_every_single_character_change_is_rejected(codec: RefCodec) -> None:
    ref = codec.encode(RefKind.PERSON, 900_001)
    for index in range(4, len(ref)):
        assert codec.decode(RefKind.PERSON, _flip(ref, index)) is None, index


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda r: r[:-1], id="truncated"),
        pytest.param(lambda r: r[:20], id="half"),
        pytest.param(lambda r: r + "A", id="extended"),
        pytest.param(lambda r: r + "=", id="padded"),
        pytest.param(lambda r: r.upper(), id="upper-cased"),
        pytest.param(lambda r: r[4:], id="no-prefix"),
        pytest.param(lambda r: r.replace("_", "-", 1), id="other-separator"),
        pytest.param(lambda r: " " + r, id="leading-space"),
        pytest.param(lambda r: r + "\n", id="trailing-newline"),
        pytest.param(lambda r: r[:4] + r[4:][::-1], id="reversed-body"),
    ],
)
def test_mangled_refs_do_not_decode(codec: RefCodec, mangle: Callable[[str], str]) -> None:
    ref = codec.encode(RefKind.PERSON, 31337)
    assert codec.decode(RefKind.PERSON, mangle(ref)) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "_",
        "per",
        "per_",
        "per_" + "A" * 32,
        "per_" + "!" * 32,
        "per_" + "é" * 32,
        "per_" + "=" * 32,
        "per_" + "A" * 31 + "=",
        "per_" + "A" * 1000,
        "fam_" + "A" * 32,
        "1234",
        "per_1234",
    ],
)
def test_garbage_does_not_decode(codec: RefCodec, garbage: str) -> None:
    assert codec.decode(RefKind.PERSON, garbage) is None


def test_a_ref_has_exactly_one_spelling(codec: RefCodec) -> None:
    ref = next(r for r in (codec.encode(RefKind.PERSON, i) for i in range(1, 100)) if "-" in r[4:])
    altered = ref[:4] + ref[4:].replace("-", "+")
    assert altered != ref
    assert codec.decode(RefKind.PERSON, altered) is None


def test_an_id_outside_64_bits_cannot_be_encoded(codec: RefCodec) -> None:
    with pytest.raises(struct.error):
        codec.encode(RefKind.PERSON, 2**64)
    with pytest.raises(struct.error):
        codec.encode(RefKind.PERSON, -1)


@pytest.mark.parametrize("length", [0, 1, 16, MIN_SECRET_BYTES - 1])
def test_a_short_secret_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_SECRET_BYTES} bytes"):
        RefCodec(b"s" * length, POLICE)


def test_a_secret_of_exactly_the_minimum_length_is_accepted() -> None:
    assert MIN_SECRET_BYTES == 32
    codec = RefCodec(b"s" * MIN_SECRET_BYTES, POLICE)
    assert codec.decode(RefKind.PERSON, codec.encode(RefKind.PERSON, 9)) == 9
