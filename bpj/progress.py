"""What a wait shows while it runs: one line on stderr (redrawn in place on a terminal, or plain lines every
so often elsewhere when asked with ``BPJ_PROGRESS=1``)."""

from __future__ import annotations

import sys
from typing import Any

from bpj import states


def is_terminal_stream(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class WaitProgress:
    """Progress of a wait on stderr: state, counts, rate, elapsed time, and the share done with an estimate of
    the time left when the total is known (``incomplete_count`` set). On a terminal one line redrawn in
    place; elsewhere, when asked (``BPJ_PROGRESS=1``), a plain line every ``every`` seconds and at each state
    change. ``BPJ_PROGRESS=0`` turns it off everywhere."""

    def __init__(self, job: Any, *, live: bool = True, every: float = 30.0, stream: Any = None) -> None:
        self.job = job
        self.live = live
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.shown = False
        self.last_line_at: float | None = None
        self.last_state: int | None = None
        self.first: tuple[float, int] | None = None  # (elapsed, instances done) when first seen

    @classmethod
    def wanted(cls, job: Any) -> WaitProgress | None:
        """The progress a wait shows by default: none when BPJ_PROGRESS=0; live on a terminal; plain
        periodic lines elsewhere only with BPJ_PROGRESS=1."""
        import os

        asked = os.environ.get("BPJ_PROGRESS", "")
        if asked == "0":
            return None
        if is_terminal_stream(sys.stderr):
            return cls(job)
        return cls(job, live=False) if asked == "1" else None

    def line(self, elapsed: float) -> str:
        r = self.job.gca_resource
        c = r.completion_stats
        done = c.successful_count + c.failed_count
        if self.first is None:
            self.first = (elapsed, done)
        parts = [
            f"{self.job.name} {states.name(r.state).removeprefix('JOB_STATE_')}:",
            f"{c.successful_count} ok, {c.failed_count} failed",
        ]
        since, done_then = self.first
        rate = (done - done_then) / (elapsed - since) if elapsed > since and done > done_then else None
        if rate:
            parts.append(f"{rate:,.0f}/s")
        total = done + c.incomplete_count if c.incomplete_count else None
        if total:
            parts.append(f"{100 * done / total:.0f}% of {total}")
            if rate and done < total and not states.is_terminal(r.state):
                parts.append(f"~{clock_text((total - done) / rate)} left")
        parts.append(f"[{clock_text(elapsed)}]")
        return " ".join(parts)

    def show(self, elapsed: float) -> None:
        text = self.line(elapsed)
        state = self.job.gca_resource.state
        if self.live:
            self.stream.write(f"\r\x1b[2K{text}")
        elif (
            self.last_line_at is None or elapsed - self.last_line_at >= self.every or state != self.last_state
        ):
            self.stream.write(text + "\n")
            self.last_line_at = elapsed
        else:
            return
        self.last_state = state
        self.stream.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown and self.live:
            self.stream.write("\n")
            self.stream.flush()


def clock_text(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
