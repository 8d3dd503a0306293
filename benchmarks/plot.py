"""``--plot PATH`` for every benchmark: the flag, the early matplotlib check, and the picture.

A benchmark describes what it measured as ``bpj.cli.plot`` data (one :class:`Phase` per table, one
:class:`Side` per row: bpj and the libraries it is compared with) and calls :func:`save`; the drawing itself
is ``bpj.cli.plot.draw``, the one ``bpj bench --plot`` uses. The picture's subtitle names the date and the
machine, so a picture carries where it was measured.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bpj import errors
from bpj.cli.plot import Phase, Side, draw, machine, require

__all__ = ["Phase", "Side", "add_argument", "check", "machine", "save"]


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plot", metavar="PNG", help="also draw the results into this PNG (needs matplotlib)"
    )


def check(args: argparse.Namespace) -> None:
    """Fail now, before measuring, when ``--plot`` was given and matplotlib or its folder is missing."""
    if getattr(args, "plot", None):
        try:
            require(args.plot)
        except errors.UsageError as e:
            sys.exit(str(e))


def save(args: argparse.Namespace, phases: Sequence[Phase], title: str, detail: str = "") -> None:
    """Draw ``phases`` into ``args.plot`` when it was given; say where on stderr."""
    if not getattr(args, "plot", None):
        return
    subtitle = f"{machine()}; {detail}" if detail else machine()
    draw(phases, args.plot, title=title, subtitle=subtitle)
    print(f"wrote {args.plot}", file=sys.stderr)
