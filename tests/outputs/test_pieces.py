"""bpj.outputs.pieces.check on generated pieces: exact tilings whose CRC32Cs combine pass, anything else is
DataCorruption naming the object."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import checksum
from bpj.errors import DataCorruption
from bpj.outputs.pieces import Piece, check

URI = "gs://bkt/dir/predictions.jsonl"


def pieces_of(data: bytes, cuts: list[int], uri: str = URI, generation: int = 7) -> list[Piece]:
    bounds = [0, *sorted(c for c in cuts if 0 <= c <= len(data)), len(data)]
    crc = checksum.crc32c(data)
    return [
        Piece(uri, generation, len(data), crc, s, e, checksum.crc32c(data[s:e]))
        for s, e in zip(bounds, bounds[1:], strict=False)
    ]


cases = st.tuples(st.binary(max_size=500), st.lists(st.integers(0, 500), max_size=6))


@settings(max_examples=200, deadline=None)
@given(case=cases, order=st.randoms())
def test_pieces_that_tile_the_object_pass_in_any_order(case, order):
    pieces = pieces_of(*case)
    order.shuffle(pieces)
    check(pieces)
    assert pickle.loads(pickle.dumps(pieces)) == pieces


@settings(max_examples=200, deadline=None)
@given(case=cases, which=st.integers(0, 10))
def test_a_missing_or_repeated_piece_is_named(case, which):
    pieces = [p for p in pieces_of(*case) if p.end > p.start]
    if not pieces:
        return
    k = which % len(pieces)
    if len(pieces) > 1:  # (with none left, the object is not among the pieces: nothing to check)
        with pytest.raises(DataCorruption, match=rf"{URI} \(generation 7\): no piece read bytes"):
            check(pieces[:k] + pieces[k + 1 :])
    with pytest.raises(DataCorruption, match=rf"{URI} \(generation 7\): bytes .* more than one piece"):
        check([*pieces, pieces[k]])


@settings(max_examples=200, deadline=None)
@given(case=cases, which=st.integers(0, 10), bit=st.integers(0, 31))
def test_a_piece_whose_crc_differs_is_named(case, which, bit):
    pieces = [p for p in pieces_of(*case) if p.end > p.start]
    if not pieces:
        return
    k = which % len(pieces)
    bad = Piece(**{**pieces[k].__dict__, "crc": pieces[k].crc ^ (1 << bit)})
    with pytest.raises(DataCorruption, match=rf"{URI} \(generation 7\): the crc32c of the bytes read"):
        check([*pieces[:k], bad, *pieces[k + 1 :]])


def test_objects_are_checked_apart_and_empty_pieces_cover_nothing():
    a, b = b'{"a": 1}\n{"a": 2}\n', b'{"b": 1}\n'
    good = [*pieces_of(a, [9]), *pieces_of(b, [], uri="gs://bkt/other.jsonl")]
    empty = Piece(URI, 7, len(a), checksum.crc32c(a), 12, 12, 0)
    check([*good, empty])
    # Another generation of the same name is another object: alone, it misses its bytes.
    with pytest.raises(DataCorruption, match=rf"{URI} \(generation 8\): no piece read bytes 9-18"):
        check([*good, *pieces_of(a, [9], generation=8)[:1]])
    outside = Piece(URI, 7, len(a), checksum.crc32c(a), 19, 19, 0)
    with pytest.raises(DataCorruption, match="outside the object's 18 bytes"):
        check([*good, outside])
    other_size = Piece(URI, 7, len(a) + 1, checksum.crc32c(a), 0, 0, 0)
    with pytest.raises(DataCorruption, match="disagree on the object"):
        check([*good, other_size])


def test_an_object_without_a_stated_crc32c_is_checked_for_tiling_only():
    pieces = [Piece(URI, 1, 20, None, s, e, 12345) for s, e in ((0, 8), (8, 20))]  # crc: any value
    check(pieces)
    with pytest.raises(DataCorruption, match="no piece read bytes 8-20"):
        check(pieces[:1])
