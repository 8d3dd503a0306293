"""bpj: a small, fast client for Vertex AI batch prediction jobs.

Public names load lazily, so ``import bpj`` pulls in no grpc, no protobuf message module and no
google.cloud package until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bpj._version import __version__ as __version__

_LAZY = {
    "init": "bpj.config",
    "config": "bpj.config",
    "errors": "bpj.errors",
    "types": "bpj.types",
    "clients": "bpj.clients",
    "states": "bpj.states",
    "BatchPredictionJob": "bpj.jobs",
    "JobFailed": "bpj.states",
    "JobCancelled": "bpj.states",
    "JobExpired": "bpj.states",
    "WaitTimeout": "bpj.states",
    "local": "bpj.local",
    "outputs": "bpj.outputs",
    "aio": "bpj.aio",
    "Model": "bpj.models",
    "wait_all": "bpj.many",
    "as_completed": "bpj.many",
    "submit_many": "bpj.many",
}
__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'bpj' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if module == f"bpj.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from bpj import aio as aio
    from bpj import clients as clients
    from bpj import config as config
    from bpj import errors as errors
    from bpj import local as local
    from bpj import outputs as outputs
    from bpj import states as states
    from bpj import types as types
    from bpj.config import init as init
    from bpj.jobs import BatchPredictionJob as BatchPredictionJob
    from bpj.many import as_completed as as_completed
    from bpj.many import submit_many as submit_many
    from bpj.many import wait_all as wait_all
    from bpj.models import Model as Model
    from bpj.states import JobCancelled as JobCancelled
    from bpj.states import JobExpired as JobExpired
    from bpj.states import JobFailed as JobFailed
    from bpj.states import WaitTimeout as WaitTimeout
