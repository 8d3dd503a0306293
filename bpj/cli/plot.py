"""Benchmark pictures: one row per phase, its throughput on the left and its latency distribution on the right.

``bpj bench --plot`` and the benchmarks in ``benchmarks/`` (their ``--plot``) describe what they measured as
plain data, :class:`Phase` values holding one :class:`Side` per thing measured (bpj alone, or bpj next to the
official libraries), and :func:`draw` turns them into a PNG. matplotlib (``pip install 'bpj[bench]'``) is
imported inside :func:`draw` only; call :func:`require` before measuring anything so a missing matplotlib
fails at once, not after a long run.

The throughput panel draws progress over time (items done against seconds) when a side has a timeline, else
one bar per side, with the side's ratio written at the end of its bar and each run of the side as a dot. The
latency panel draws the distribution (CDF) of every side that kept per-call timings; a side with one call is a
single marked value. The latency column is left out when no phase has timings.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bpj import errors

INSTALL = "pip install 'bpj[bench]'"
# Sizes for a picture readable on a README page and well under 150 KB as a PNG.
ROW_INCHES, WIDTH_INCHES, HEADER_INCHES, DPI = 2.5, 11.0, 0.7, 80
CDF_POINTS = 300


class Samples:
    """At most ``limit`` samples of ``width`` floats each, in one flat ``array('d')``: every sample until the
    limit, then a uniform random subset of all samples added (reservoir sampling, seeded, so a run is
    repeatable). ``seen`` counts every sample added."""

    def __init__(self, limit: int = 10_000, width: int = 1, seed: int = 0) -> None:
        if limit < 1 or width < 1:
            raise ValueError(f"limit and width must be >= 1, got {limit}, {width}")
        self.limit, self.width, self.seen = limit, width, 0
        self.values = array("d")
        self._rng = random.Random(seed)

    def add(self, *sample: float) -> None:
        if len(sample) != self.width:
            raise ValueError(f"a sample has {self.width} values, got {len(sample)}")
        self.seen += 1
        if self.seen <= self.limit:
            self.values.extend(sample)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.limit:
            self.values[slot * self.width : (slot + 1) * self.width] = array("d", sample)

    def __len__(self) -> int:
        return len(self.values) // self.width

    def __iter__(self) -> Iterator[float]:
        """The kept values (width 1)."""
        return iter(self.values)

    def rows(self) -> list[tuple[float, ...]]:
        """The kept samples as tuples, in the order they are stored."""
        w = self.width
        return [tuple(self.values[i : i + w]) for i in range(0, len(self.values), w)]


@dataclass
class Side:
    """One thing measured in a phase.

    ``rate`` is its throughput in the phase's unit (None when the phase has no unit: then ``seconds`` is
    drawn); ``runs`` the rate (or seconds) of each run when there were several; ``ratio`` the number the
    benchmark reports for this side (its phase's ``ratio_means`` says of what); ``timeline`` pairs of
    (seconds since the phase started, items done by then); ``latencies`` seconds per call."""

    label: str
    rate: float | None = None
    seconds: float | None = None
    runs: Sequence[float] = ()
    ratio: float | None = None
    timeline: Sequence[tuple[float, ...]] = ()
    latencies: Sequence[float] = ()


@dataclass
class Phase:
    """One row of the picture: a phase and every side measured in it. ``unit`` is the throughput's unit
    (``"MB/s"``; None: the bars are seconds), ``items`` what the timeline counts, ``call`` what one latency
    sample is (``"Get"``, ``"batch"``)."""

    name: str
    sides: list[Side]
    unit: str | None = None
    items: str = "items"
    call: str = "call"
    ratio_means: str = ""


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 < q <= 1) of sorted, non-empty ``ordered``: the smallest value at least a
    share ``q`` of them do not exceed."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def machine() -> str:
    """This run's date (UTC), cores, memory and Python, for a picture's subtitle."""
    import os
    import platform
    from datetime import datetime, timezone

    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal:")))
        memory = f", {kb / (1 << 20):.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return f"{day}; {os.cpu_count()} cores{memory}; Python {platform.python_version()}"


def require(path: str | None = None) -> None:
    """Raise UsageError naming the extra to install when matplotlib cannot be imported, or naming ``path``
    when its folder does not exist (checked before a run, not after it)."""
    import os

    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as e:
        raise errors.UsageError(f"--plot needs matplotlib: {INSTALL} ({e})") from None
    if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise errors.UsageError(f"--plot: no such folder for {path}")


def draw(phases: Sequence[Phase], path: str, *, title: str, subtitle: str = "") -> None:
    """Write ``phases`` as a PNG to ``path``: one row per phase (see the module docstring)."""
    require()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [_shown(p) for p in phases] or [Phase("(no phases)", [])]
    timed = any(_finite(s.latencies) for p in rows for s in p.sides)
    heights = [max(ROW_INCHES, 0.9 + 0.32 * len(p.sides)) for p in rows]
    width, height = WIDTH_INCHES, HEADER_INCHES + sum(heights)
    # Laid out by hand in inches (matplotlib's layout engines cost seconds a picture here): room on the left
    # for the longest bar label, a gap for the latency panel's axis, a title above each panel and the
    # x labels under it.
    barred = [p for p in rows if not _progressing(p)]
    longest = max((len(s.label) for p in barred for s in p.sides), default=0)
    left = min(3.1, max(0.75, 0.25 + 0.062 * longest))
    gap, right = 0.85, 0.25
    usable = width - left - gap - right if timed else width - left - right
    widths = [usable * 0.55, usable * 0.45] if timed else [usable]
    fig = Figure(figsize=(width, height))
    top = height - HEADER_INCHES
    for phase, h in zip(rows, heights, strict=True):
        top -= h  # the row's bottom edge, and the next row's top
        box = (top + 0.55) / height, (h - 0.95) / height
        _throughput(fig.add_axes((left / width, box[0], widths[0] / width, box[1])), phase)
        if timed:
            x = (left + widths[0] + gap) / width
            _latency(fig.add_axes((x, box[0], widths[1] / width, box[1])), phase)
    fig.text(0.01, 1 - 0.1 / height, _label(title, 200), fontsize=11, va="top")
    if subtitle:
        fig.text(0.01, 1 - 0.4 / height, _label(subtitle, 200), fontsize=8, color="0.3", va="top")
    _save(fig, path)


def _save(fig: Any, path: str) -> None:
    """Write ``fig`` as a PNG of 256 colours at most: a third of the bytes, the same picture to the eye."""
    import io

    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, format="PNG", optimize=True)


def _shown(phase: Phase) -> Phase:
    """``phase`` with every text as it can be drawn."""
    return replace(
        phase,
        name=_label(phase.name, 90),
        sides=[replace(s, label=_label(s.label)) for s in phase.sides],
        unit=None if phase.unit is None else _label(phase.unit, 40),
        items=_label(phase.items, 20),
        call=_label(phase.call, 20),
        ratio_means=_label(phase.ratio_means),
    )


def _label(text: str, most: int = 46) -> str:
    """``text`` as matplotlib shows it literally (a ``$`` would start mathtext), cut to ``most`` characters."""
    text = " ".join(str(text).split())
    if len(text) > most:
        text = text[: most - 1] + "…"
    return text.replace("$", r"\$")


COLOURS = ["#1f6fb4", "#e07b1a", "#2a9d4b", "#c43c39", "#8660b8", "#7f6056", "#d064b5", "#6f6f6f"]


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def _progressing(phase: Phase) -> list[tuple[int, Side]]:
    """The sides of ``phase`` with progress over time to draw (none: the phase is drawn as bars)."""
    return [(i, s) for i, s in enumerate(phase.sides) if len(_points(s.timeline)) >= 2]


def _throughput(a: Any, phase: Phase) -> None:
    lines = _progressing(phase)
    if lines:
        _progress(a, phase, lines)
    else:
        _bars(a, phase)


def _points(timeline: Sequence[tuple[float, ...]]) -> list[tuple[float, float]]:
    return sorted(
        (float(p[0]), float(p[1])) for p in timeline if len(p) >= 2 and all(map(math.isfinite, p[:2]))
    )


def _progress(a: Any, phase: Phase, lines: list[tuple[int, Side]]) -> None:
    from matplotlib.ticker import EngFormatter

    for i, side in lines:
        pts = _points(side.timeline)
        rate = "" if side.rate is None else f": {_num(side.rate)} {phase.unit or ''}".rstrip()
        a.step(
            [p[0] for p in pts],
            [p[1] for p in pts],
            where="post",
            color=COLOURS[i % len(COLOURS)],
            marker="." if len(pts) < 60 else None,
            label=f"{side.label}{rate}",
        )
    a.set_title(f"{phase.name}: {phase.items} done over time", loc="left", fontsize=10)
    a.set_xlabel("seconds since the phase started", fontsize=8)
    a.set_ylabel(phase.items, fontsize=8)
    a.yaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1M
    a.set_xlim(left=0)
    a.set_ylim(bottom=0)
    a.grid(alpha=0.3)
    a.tick_params(labelsize=8)
    a.legend(fontsize=8, loc="upper left")


def _bars(a: Any, phase: Phase) -> None:
    by_rate = phase.unit is not None
    values = [(s.rate if by_rate else s.seconds) for s in phase.sides]
    shown = [v if v is not None and math.isfinite(v) and v >= 0 else 0.0 for v in values]
    ys = list(range(len(phase.sides)))[::-1]  # the first side on top
    runs = [[r for r in _finite(s.runs) if r >= 0] for s in phase.sides]
    top = max([*shown, *(r for rs in runs for r in rs), 0.0])
    positive = [v for v in [*shown, *(r for rs in runs for r in rs)] if v > 0]
    # Values far apart (10 ms next to 10 s) on a log axis, the bars starting below the smallest.
    log = bool(positive) and top / min(positive) > 100
    base = min(positive) / 3 if log else 0.0
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(ys))]
    a.barh(ys, [max(v - base, 0.0) for v in shown], left=base, color=colours, height=0.6)
    if log:
        _log_x(a, math.inf)  # labels at the powers of ten alone: bar panels are narrow
    for y, rs in zip(ys, runs, strict=True):
        if len(rs) > 1:
            a.plot([max(r, base) for r in rs], [y] * len(rs), "o", color="black", markersize=3, alpha=0.6)
    for s, y, v, raw in zip(phase.sides, ys, shown, values, strict=True):
        text = "n/a" if raw is None else _num(v)
        if s.ratio is not None and math.isfinite(s.ratio):
            text += f"  ({s.ratio:,.0f}x)" if s.ratio >= 100 else f"  ({s.ratio:.2f}x)"
        a.text(max(v, base) * 1.08 if log else v + top * 0.01, y, text, va="center", fontsize=8)
    a.set_ylim(-0.7, len(ys) - 0.3 + (0.5 if len(ys) == 1 else 0))
    a.set_yticks(ys)
    a.set_yticklabels([s.label for s in phase.sides], fontsize=8)
    a.set_xlim(*((base, top * 6) if log else (0, (top or 1.0) * 1.3)))
    what = phase.unit if by_rate else "seconds (lower is better)"
    ratio = f"   (in brackets: {phase.ratio_means})" if phase.ratio_means else ""
    a.set_xlabel(f"{what}{ratio}", fontsize=8)
    a.set_title(phase.name, loc="left", fontsize=10)
    a.grid(axis="x", alpha=0.3)
    a.tick_params(labelsize=8)
    if not phase.sides:
        a.text(0.5, 0.5, "nothing measured", transform=a.transAxes, ha="center", color="0.4")


def _latency(a: Any, phase: Phase) -> None:
    kept = [(i, s, sorted(_finite(s.latencies))) for i, s in enumerate(phase.sides)]
    kept = [(i, s, v) for i, s, v in kept if v]
    a.set_title(f"{phase.name}: time per {phase.call}", loc="left", fontsize=10)
    a.tick_params(labelsize=8)
    if not kept:
        a.text(0.5, 0.5, "no per-call timings in this phase", transform=a.transAxes, ha="center", color="0.4")
        a.set_xticks([])
        a.set_yticks([])
        return
    every = [v for _, _, vs in kept for v in vs]
    scale, unit = _time_unit(max(every))
    if all(len(vs) == 1 for _, _, vs in kept):
        # One call each: a distribution of one value says nothing a number does not.
        text = "\n".join(
            f"{side.label}: one {phase.call}, {_num(vs[0] * scale)} {unit}" for _, side, vs in kept
        )
        a.text(0.5, 0.5, text, transform=a.transAxes, ha="center", va="center", fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
        return
    a.set_title(f"time per {phase.call} (median / p99)", loc="left", fontsize=10)
    low, high = min(every), max(every)
    if low > 0 and high / low > 10:
        _log_x(a, high / low)
    for i, side, vs in kept:
        colour = COLOURS[i % len(COLOURS)]
        xs = [v * scale for v in vs]
        median = quantile(xs, 0.5)
        # Beside bars of the same colours the numbers are enough; alone, the side is named.
        name = "" if len(phase.sides) > 1 else f"{side.label}: "
        if len(xs) == 1:
            a.axvline(xs[0], color=colour, linewidth=2, label=f"{name}one {phase.call}, {_num(xs[0])} {unit}")
            continue
        p99 = quantile(xs, 0.99)
        # At most CDF_POINTS steps: more are invisible at this size and only make the PNG bigger.
        ks = sorted({round(j * (len(xs) - 1) / (CDF_POINTS - 1)) for j in range(CDF_POINTS)})
        a.step(
            [xs[k] for k in ks],
            [(k + 1) / len(xs) for k in ks],
            where="post",
            color=colour,
            label=f"{name}{_duration(median / scale)} / {_duration(p99 / scale)} (n={len(xs):,})",
        )
    a.set_ylim(0, 1.02)
    a.set_xlabel(f"{unit} per {phase.call}", fontsize=8)
    a.set_ylabel("share of calls at most", fontsize=8)
    a.grid(alpha=0.3)
    a.legend(fontsize=7, loc="best")


def _log_x(a: Any, span: float) -> None:
    """A log x axis labelled in plain numbers: at 1, 2 and 5 times the powers of ten when the values span
    less than three of them (``span`` = largest / smallest), else at the powers alone."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a.set_xscale("log")
    a.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if span < 1000 else (1.0,)))
    a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
    a.xaxis.set_minor_formatter(NullFormatter())


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds < 1e-3:
        return 1e6, "µs"
    if seconds < 2.0:
        return 1e3, "ms"
    return 1.0, "s"


def _duration(seconds: float) -> str:
    scale, unit = _time_unit(seconds)
    return f"{_num(seconds * scale)} {unit}"


def _num(x: float) -> str:
    """A number with three significant digits and thousands separators."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{digits}f}"
