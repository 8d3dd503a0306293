"""Engines past one machine, for real: one local stack with a token (so every worker must bring its own
credentials), one scikit-learn job with GCS output and one with BigQuery output, a Dask LocalCluster of
worker processes and a local Ray, each started once for the whole folder. Workers get the stack's
environment (``stack.env()``, as ``bpj local start`` prints it) when they start; the test process gets it
through ``stack.init()``."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = f"cluster-token-{secrets.token_hex(8)}"
INSTANCES = 3000


@dataclass(frozen=True)
class Outputs:
    gcs: str  # the GCS job's output directory
    bigquery: str  # bq://project.dataset.table of the BigQuery job
    rows: int  # predictions in each


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    from bpj import config
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("cluster-stack"), token=TOKEN) as s:
        s.init()
        try:
            yield s
        finally:
            config.reset()


@pytest.fixture(scope="package")
def worker_env(stack):
    """What a worker needs in its environment: the stack's, and this checkout on the path (test helpers)."""
    return {
        **stack.env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture(scope="package")
def outputs(stack):
    """A GCS and a BigQuery job of the main job's model (LogisticRegression on iris), keyed by ``id``."""
    from examples import main_job

    model, rows = main_job.train()
    name = main_job.upload_model(stack, model)
    x = main_job.make_instances(rows, INSTANCES)
    main_job.upload_gcs_input(stack, x)
    source = main_job.upload_bigquery_input(stack, x)
    gcs = main_job.run_job(
        "gcs",
        name,
        None,
        instances_format="jsonl",
        gcs_source=main_job.INPUT_URI,
        predictions_format="jsonl",
        gcs_destination_prefix=f"gs://{main_job.OUTPUT_BUCKET}/cluster",
    )
    bq = main_job.run_job(
        "bigquery",
        name,
        None,
        instances_format="bigquery",
        bigquery_source=source,
        predictions_format="bigquery",
        bigquery_destination_prefix=f"bq://{stack.project}",
    )
    info = bq.output_info
    return Outputs(
        gcs=gcs.output_info.gcs_output_directory,
        bigquery=f"{info.bigquery_output_dataset}.{info.bigquery_output_table}",
        rows=INSTANCES,
    )


@pytest.fixture(scope="package")
def dask_client(worker_env):
    """Two worker processes of one thread each, started with the stack's environment and no other."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=worker_env,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="package")
def ray_local(worker_env):
    import ray

    # Never a report to Ray's usage-stats server (off by default for ray.init; said here so it stays off).
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": worker_env},
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",  # loopback only
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        patch.undo()
