"""bpj.checksum against a plain table-driven CRC32C (Castagnoli), for every installed implementation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import checksum


def _table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = _table()


def reference(data: bytes, crc: int = 0) -> int:
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


IMPLEMENTATIONS = checksum.implementations()


def test_the_reference_is_crc32c():
    assert reference(b"123456789") == 0xE3069283  # the check value of CRC-32C


def test_google_crc32c_is_always_there_and_one_is_chosen():
    assert "google-crc32c" in IMPLEMENTATIONS
    assert checksum.implementation() == next(iter(IMPLEMENTATIONS))


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000),
    cut=st.integers(0, 3000),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_every_implementation_extends_like_the_reference(name, data, cut, kind):
    extend = IMPLEMENTATIONS[name]
    cut = min(cut, len(data))
    head, tail = kind(data[:cut]), kind(data[cut:])
    assert extend(head, 0) == reference(data[:cut])
    assert extend(tail, extend(head, 0)) == reference(data)
    assert checksum.crc32c(tail, checksum.crc32c(head)) == reference(data)


def test_goog_hash_header():
    assert (
        checksum.from_goog_hash({"X-Goog-Hash": "md5=XrY7u+Ae7tCTyyK7j1rNww==, crc32c=4waSgw=="})
        == 0xE3069283
    )
    assert checksum.from_goog_hash({"X-Goog-Hash": "md5=XrY7u+Ae7tCTyyK7j1rNww=="}) is None
    assert checksum.from_goog_hash({}) is None
    assert checksum.from_base64("4waSgw==") == reference(b"123456789")


@settings(max_examples=300, deadline=None)
@given(a=st.binary(max_size=2000), b=st.binary(max_size=2000))
def test_combine_gives_the_crc32c_of_the_concatenation(a, b):
    assert checksum.combine(reference(a), reference(b), len(b)) == reference(a + b)


@settings(max_examples=50, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), max_size=8), zeros=st.integers(0, 1 << 22))
def test_combine_folds_many_pieces_and_long_lengths(parts, zeros):
    # Long lengths without long data: a run of zero bytes, whose CRC32C the library computes quickly.
    parts = [*parts, bytes(zeros)]
    crc = 0
    for p in parts:
        crc = checksum.combine(crc, checksum.crc32c(p), len(p))
    assert crc == checksum.crc32c(b"".join(parts))


def test_combine_refuses_a_negative_length():
    with pytest.raises(ValueError, match="len_b"):
        checksum.combine(0, 0, -1)
