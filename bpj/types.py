"""Every message and enum bpj speaks, e.g. ``bpj.types.BatchPredictionJob``, ``bpj.types.JobState``.

Classes come from bpj's private descriptor pool and load on first use. They are wire-compatible with the
official libraries' classes (same bytes, same JSON) but are distinct Python classes: convert with
``bpj.types.X.FromString(official.SerializeToString())``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bpj._gen import types as _generated


def __getattr__(name: str) -> Any:
    value = getattr(_generated, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(_generated.__all__)


if TYPE_CHECKING:
    from bpj._gen.types import *  # noqa: F403
