"""Shared helpers for benchmarks: fresh-interpreter measurements and a plain table with ratios."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

_PROBE = """
import json, resource, sys, time
t = time.perf_counter()
exec(compile(sys.argv[1], "<bench>", "exec"))
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def fresh(code: str, repeat: int = 7) -> dict[str, Any]:
    """Median wall time and peak RSS of running ``code`` in a new interpreter (``repeat`` runs); ``runs``:
    every run's seconds."""
    times, rss = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _PROBE, code], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(r["seconds"])
        rss.append(r["maxrss_kb"] / 1024)
    return {"seconds": statistics.median(times), "rss_mb": statistics.median(rss), "runs": times}


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])
