"""Pieces of objects read apart, and the check that they make up each object exactly.

An object split into byte ranges (``GcsReader.partitions(max_bytes=...)``) is read by several workers, each
decoding the lines that start in its range. Cloud Storage keeps one CRC32C per object, so no worker can check
its rows alone: each reports a :class:`Piece` (the bytes its rows came from and their CRC32C), and once every
range of an object has been read, :func:`check` proves that the pieces tile the object (no byte missing, none
read twice) and that their CRC32Cs combine to the object's. Until then the rows are not final. Plain data, no
I/O: pieces travel back from workers with the rows (they pickle).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bpj import checksum, errors

__all__ = ["Piece", "check"]


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of one generation of an object, which a partition decoded, and their CRC32C.

    ``size`` and ``crc32c`` are the object's as Cloud Storage states them (``crc32c`` None: it states none,
    so only the tiling is checked). A range that owns no line reports ``start == end`` (and ``crc`` 0).
    """

    uri: str
    generation: int
    size: int
    crc32c: int | None
    start: int
    end: int
    crc: int


def check(pieces: Iterable[Piece]) -> None:
    """DataCorruption naming the object unless, for every object (URI and generation) among ``pieces``, they
    cover ``[0, size)`` exactly in order (sorted by start: no gap, no overlap) and their CRC32Cs combine to
    the object's. Empty pieces cover nothing: they only have to lie within the object."""
    objects: dict[tuple[str, int], list[Piece]] = {}
    for p in pieces:
        objects.setdefault((p.uri, p.generation), []).append(p)
    for (uri, generation), found in objects.items():
        _check_object(uri, generation, found)


def _check_object(uri: str, generation: int, pieces: list[Piece]) -> None:
    what = f"{uri} (generation {generation})"
    first = pieces[0]
    for p in pieces:
        if (p.size, p.crc32c) != (first.size, first.crc32c):
            raise errors.DataCorruption(
                f"{what}: its pieces disagree on the object: size {p.size} and crc32c {_hex(p.crc32c)} in "
                f"one, size {first.size} and crc32c {_hex(first.crc32c)} in another"
            )
        if not 0 <= p.start <= p.end <= p.size:
            raise errors.DataCorruption(
                f"{what}: a piece says bytes {p.start}-{p.end}, outside the object's {p.size} bytes"
            )
    covered = sorted((p for p in pieces if p.end > p.start), key=lambda p: (p.start, p.end))
    pos, crc = 0, 0
    for p in covered:
        if p.start > pos:
            raise errors.DataCorruption(
                f"{what}: no piece read bytes {pos}-{p.start}; its rows are incomplete"
            )
        if p.start < pos:
            raise errors.DataCorruption(
                f"{what}: bytes {p.start}-{min(pos, p.end)} were read by more than one piece; "
                "rows would repeat"
            )
        crc = checksum.combine(crc, p.crc, p.end - p.start)
        pos = p.end
    if pos < first.size:
        raise errors.DataCorruption(
            f"{what}: no piece read bytes {pos}-{first.size}; its rows are incomplete"
        )
    if first.crc32c is not None and crc != first.crc32c:
        raise errors.DataCorruption(
            f"{what}: the crc32c of the bytes read is {crc:08x}, the object's is {first.crc32c:08x}; "
            "its rows are not the object's"
        )


def _hex(crc: int | None) -> str:
    return "none" if crc is None else f"{crc:08x}"
