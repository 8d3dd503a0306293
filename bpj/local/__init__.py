"""The local stack: Vertex AI batch prediction, GCS and BigQuery on one machine, behind the public APIs.

Modules (server side; nothing here is imported by ``import bpj``):

    stack.py      LocalStack: starts everything on 127.0.0.1 with free ports, env() for clients
    vertex.py     JobService, ModelService and Operations servicers
    checks.py     what the emulator refuses at create and upload: URIs outside the stack, non-finite Values
    store.py      jobs, models and operations in SQLite under the data dir, and every state a job entered
    executor.py   runs jobs in a bounded pool: read instances, predict, write outputs, keep state
    predictor_process.py   each running job's predictor in a process of its own, stopped on cancel
    models.py     scikit-learn, XGBoost and custom-prediction-routine predictors
    gcs.py        GcsServer: fake-gcs-server behind the guard (the client is bpj/gcs.py, shared with the readers)
    gcs_guard.py  the GCS port: token, Host, Origin and name checks in front of fake-gcs-server
    gcs_routes.py the JSON API routes the guard forwards, rebuilt from the names it checked
    gcs_media.py  downloads the guard sends from the engine's files (sendfile)
    http_relay.py HTTP/1.1 framing and splice relaying for the guard
    inputs.py     streaming instance readers (jsonl, csv, tf-record, tf-record-gzip, file-list, bigquery)
    records.py    CSV and TFRecord framing, one bad row or record isolated
    instance_config.py   InstanceConfig: how a raw record becomes an instance
    sinks.py      prediction and error writers in Vertex AI's layout (GCS files, BigQuery tables)
    bigquery/     the table store, the Storage Read gRPC server and the BigQuery REST API
    console/      the web console (jobs, a job, models): its pages, scripts, JSON API and sign-in sessions
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
