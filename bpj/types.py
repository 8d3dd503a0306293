"""Every message and enum bpj speaks, e.g. ``bpj.types.BatchPredictionJob``, ``bpj.types.JobState``.

Classes come from bpj's private descriptor pool and load on first use. They are wire-compatible with the
official libraries' classes (same bytes, same JSON) but are distinct Python classes: convert with
``bpj.types.X.FromString(official.SerializeToString())``.

Type checkers see every name as its generated class (``bpj/_gen/types.pyi`` and the ``_pb2.pyi`` stubs),
and a name that does not exist is an error there too: the lazy ``__getattr__`` is for the interpreter only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bpj._gen.types import *  # noqa: F403
    from bpj._gen.types import __all__ as __all__
else:
    from bpj._gen import types as _generated

    def __getattr__(name):
        value = getattr(_generated, name)
        globals()[name] = value
        return value

    def __dir__():
        return list(_generated.__all__)
