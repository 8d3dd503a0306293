"""The generated service clients, and ready-made ones wired to ``bpj.init`` settings.

    import bpj
    bpj.init(project="my-project", location="europe-west4")        # or BPJ_* environment variables
    jobs = bpj.clients.job_service()                                # JobServiceClient on the shared channel
    job = jobs.get_batch_prediction_job(bpj.types.GetBatchPredictionJobRequest(name=...))

Each factory returns a client over the process-wide transport for its endpoint (one gRPC channel or HTTP
session per endpoint, reused by every client and call). Pass ``transport=`` to use your own instead, e.g.
``InMemoryTransport(servicer)`` in tests. Classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SERVICES = {
    "JobService": "job_service",
    "ModelService": "model_service",
    "Operations": "operations",
    "BigQueryRead": "big_query_read",
}
_WHERE = {
    f"{prefix}{service}{suffix}": module
    for service, module in _SERVICES.items()
    for prefix, suffix in (("", "Client"), ("Async", "Client"), ("", "Servicer"))
}
__all__ = sorted([*_WHERE, "job_service", "model_service", "operations", "bigquery_read"])


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'bpj.clients' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"bpj._gen.services.{module}"), name)
    globals()[name] = value
    return value


def _vertex(cls_name: str, transport: Any, overrides: dict[str, Any]) -> Any:
    from bpj import config

    cls = __getattr__(cls_name)
    if transport is None:
        s = config.settings(**overrides)
        transport = config.transport_for(s.vertex_endpoint, s)
    return cls(transport)


def job_service(*, transport: Any = None, **overrides: Any) -> JobServiceClient:
    """A JobServiceClient for the Vertex AI endpoint of the current settings (``overrides`` as in init())."""
    return _vertex("JobServiceClient", transport, overrides)


def model_service(*, transport: Any = None, **overrides: Any) -> ModelServiceClient:
    """A ModelServiceClient for the Vertex AI endpoint of the current settings."""
    return _vertex("ModelServiceClient", transport, overrides)


def operations(*, transport: Any = None, **overrides: Any) -> OperationsClient:
    """An OperationsClient (google.longrunning, with Vertex AI's HTTP bindings) for the Vertex AI endpoint."""
    return _vertex("OperationsClient", transport, overrides)


def bigquery_read(*, transport: Any = None, **overrides: Any) -> BigQueryReadClient:
    """A BigQueryReadClient for the BigQuery Storage endpoint of the current settings; always gRPC (the
    Storage Read API streams rows over gRPC only)."""
    from bpj import config

    if transport is None:
        s = config.settings(**overrides)
        transport = config.transport_for(s.bigquery_storage_endpoint, s, kind="grpc")
    return __getattr__("BigQueryReadClient")(transport)


if TYPE_CHECKING:
    from bpj._gen.services.big_query_read import AsyncBigQueryReadClient as AsyncBigQueryReadClient
    from bpj._gen.services.big_query_read import BigQueryReadClient as BigQueryReadClient
    from bpj._gen.services.big_query_read import BigQueryReadServicer as BigQueryReadServicer
    from bpj._gen.services.job_service import AsyncJobServiceClient as AsyncJobServiceClient
    from bpj._gen.services.job_service import JobServiceClient as JobServiceClient
    from bpj._gen.services.job_service import JobServiceServicer as JobServiceServicer
    from bpj._gen.services.model_service import AsyncModelServiceClient as AsyncModelServiceClient
    from bpj._gen.services.model_service import ModelServiceClient as ModelServiceClient
    from bpj._gen.services.model_service import ModelServiceServicer as ModelServiceServicer
    from bpj._gen.services.operations import AsyncOperationsClient as AsyncOperationsClient
    from bpj._gen.services.operations import OperationsClient as OperationsClient
    from bpj._gen.services.operations import OperationsServicer as OperationsServicer
