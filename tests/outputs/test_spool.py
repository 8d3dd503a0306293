"""bpj.outputs.spool on generated objects: ranges written in any order check by their combined CRC32C, and the
file comes back in slices of whole lines."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import checksum
from bpj.errors import DataCorruption
from bpj.gcs import GcsObject
from bpj.outputs.spool import Spool

# Bytes with newlines often enough to make lines of every length, and now and then a long one.
objects = st.lists(st.one_of(st.binary(max_size=40), st.binary(min_size=200, max_size=900)), max_size=30).map(
    lambda parts: b"\n".join(parts)
)


def spool_of(data: bytes, cut: int, seed: int) -> Spool:
    spool = Spool(GcsObject("bkt", "o.jsonl", len(data), "1", checksum.crc32c(data)))
    ranges = [(s, data[s : s + cut]) for s in range(0, len(data), cut)]
    random.Random(seed).shuffle(ranges)
    for start, piece in ranges:
        spool.write(start, piece)
    return spool


@settings(max_examples=150, deadline=None)
@given(data=objects, cut=st.integers(1, 700), size=st.integers(1, 500), seed=st.integers(0, 9))
def test_ranges_in_any_order_check_and_read_back_in_whole_lines(data, cut, size, seed):
    spool = spool_of(data, cut, seed)
    try:
        spool.check()  # the ranges' crc32cs combine to the listed crc32c(data)
        assert bytes(spool.read(0, len(data))) == data
        slices = [bytes(s) for s in spool.lines(size)]
        assert b"".join(slices) == data
        for s in slices[:-1]:
            assert s.endswith(b"\n")
            # No longer than asked unless it is one line that is.
            assert len(s) <= size or s.count(b"\n") == 1
        assert bytes(spool.view()) == data
    finally:
        spool.close()


def test_a_missing_range_or_other_bytes_are_data_corruption():
    data = b'{"a": 1}\n' * 1000
    spool = spool_of(data, 1000, 1)
    spool.check()
    spool.write(4000, b"X" + data[4001:5000])  # the range at 4000 again, one byte changed
    with pytest.raises(DataCorruption, match=r"gs://bkt/o\.jsonl: crc32c .*nothing of it was returned"):
        spool.check()
    spool.close()
    short = Spool(GcsObject("bkt", "o.jsonl", len(data), "1", checksum.crc32c(data)))
    short.write(0, data[:1000])
    short.write(2000, data[2000:])
    with pytest.raises(DataCorruption, match="bytes 1000-2000 were not downloaded"):
        short.check()
    short.close()


def test_the_file_is_unlinked_at_once_and_closed_by_close(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spool = spool_of(b"a\nb\n", 2, 0)
    assert os.listdir(tmp_path) == []
    view = spool.view()
    spool.close()
    spool.close()  # twice is fine
    assert bytes(view) == b"a\nb\n"  # the map outlives the file (and holds it open until it goes)
    del view
    assert not [fd for fd in os.listdir("/proc/self/fd") if str(tmp_path) in _link(fd)]


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
