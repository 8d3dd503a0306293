"""The readers' progress line: totals, share done and time left when the size is known, redrawn in place on a
terminal, plain periodic lines elsewhere when asked."""

from __future__ import annotations

import io
import re

from hypothesis import given
from hypothesis import strategies as st

from bpj.outputs.reader import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_known_size_shows_share_and_time_left():
    clock = Clock()
    out = io.StringIO()
    meter = Progress(True, label="gs://b/out", total_bytes=4_000_000, stream=out, clock=clock, every=5)
    clock.now += 10
    meter.add(100, 1_000_000)  # a quarter in 10 s: 30 s left
    assert out.getvalue() == "gs://b/out: 100 rows 1.0/4.0 MB 0.1 MB/s 25% ~00:30 left [00:10]\n"
    clock.now += 1
    meter.add(100, 1_000_000)  # within `every`: no line
    assert out.getvalue().count("\n") == 1
    clock.now += 19
    meter.add(200, 2_000_000)
    meter.close()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "gs://b/out: 400 rows 4.0/4.0 MB 0.1 MB/s 100% [00:30]"
    assert "\r" not in out.getvalue()


def test_rows_estimate_when_bytes_unknown():
    clock = Clock()
    out = Terminal()
    meter = Progress(None, label="bq://p.d.t", total_rows=1000, stream=out, clock=clock)
    clock.now += 2
    meter.add(250, 5_000_000)
    assert out.getvalue() == "\r\x1b[2Kbq://p.d.t: 250 rows 5.0 MB 2.5 MB/s 25% ~00:06 left [00:02]"
    meter.close()
    assert out.getvalue().endswith("\n")


def test_unknown_size_shows_no_share():
    clock = Clock()
    out = io.StringIO()
    meter = Progress(True, stream=out, clock=clock, every=1)
    clock.now += 3
    meter.add(7, 3_000_000)
    assert out.getvalue() == "7 rows 3.0 MB 1.0 MB/s [00:03]\n"


def test_default_follows_the_terminal_and_bpj_progress(monkeypatch):
    monkeypatch.delenv("BPJ_PROGRESS", raising=False)
    assert Progress(stream=Terminal()).enabled and not Progress(stream=io.StringIO()).enabled
    monkeypatch.setenv("BPJ_PROGRESS", "1")
    assert Progress(stream=io.StringIO()).enabled
    monkeypatch.setenv("BPJ_PROGRESS", "0")
    assert not Progress(stream=Terminal()).enabled
    assert Progress(True, stream=io.StringIO()).enabled  # asked for in code: shown


def test_nothing_read_nothing_shown():
    out = io.StringIO()
    Progress(True, stream=out).close()
    assert out.getvalue() == ""


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10**9), st.floats(0, 100)), max_size=30),
    st.one_of(st.none(), st.integers(1, 10**10)),
    st.one_of(st.none(), st.integers(1, 10**6)),
)
def test_any_sequence_of_reads_gives_sane_lines(steps, total_bytes, total_rows):
    clock = Clock()
    out = io.StringIO()
    meter = Progress(True, total_bytes=total_bytes, total_rows=total_rows, stream=out, clock=clock, every=0)
    for rows, nbytes, pause in steps:
        clock.now += pause
        meter.add(rows, nbytes)
    meter.close()
    for line in out.getvalue().splitlines():
        shares = [int(s) for s in re.findall(r" (\d+)% ", line + " ")]
        assert all(0 <= s <= 100 for s in shares)
        assert ("left" in line) <= bool(shares)  # an estimate only with a known size
        assert bool(shares) == bool(total_bytes or total_rows)
    if steps and any(r or b for r, b, _ in steps):
        last = out.getvalue().splitlines()[-1]
        assert f"{sum(r for r, _, _ in steps):,} rows" in last
