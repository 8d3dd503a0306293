"""The local stack: Vertex AI batch prediction, GCS and BigQuery on one machine, behind the public APIs.

Modules (server side; nothing here is imported by ``import bpj``):

    stack.py      LocalStack: starts everything on 127.0.0.1 with free ports, env() for clients
    vertex.py     JobService, ModelService and Operations servicers
    store.py      jobs, models and operations in SQLite under the data dir
    executor.py   runs jobs in a bounded pool: read instances, predict, write outputs, keep state
    models.py     scikit-learn, XGBoost and custom-prediction-routine predictors
    gcs.py        the fake-gcs-server process, and a small GCS client the executor reads and writes with
    inputs.py     streaming instance readers (jsonl, csv, tf-record, tf-record-gzip, file-list, bigquery)
    sinks.py      prediction and error writers in Vertex AI's layout (GCS files, BigQuery tables)
    bigquery/     the table store, the Storage Read gRPC server and the BigQuery REST API
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


def __getattr__(name: str) -> Any:
    if name == "LocalStack":
        from bpj.local.stack import LocalStack

        return LocalStack
    raise AttributeError(f"module 'bpj.local' has no attribute {name!r}")


if TYPE_CHECKING:
    from bpj.local.stack import LocalStack as LocalStack
