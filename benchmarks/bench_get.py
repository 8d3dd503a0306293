"""Latency of getting one job, every client against the same local server on a reused connection.

    python -m benchmarks.bench_get [--calls N]

Get and create. Clients: a bare grpcio unary call (the limit: no layers, just the channel and the message class), bpj's
generated client over its gRPC, REST and in-memory transports, google-cloud-aiplatform's generated
JobServiceClient (GAPIC) on a reused channel, and the official high-level ``aiplatform.BatchPredictionJob(name)``,
which builds a new client for every call. The high-level SDK only speaks TLS, so the run also serves over
TLS with a self-signed certificate (trusted through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).

Target (DESIGN.md): bpj over gRPC <= 1.5x the bare grpcio call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from array import array
from collections.abc import Callable

from benchmarks import plot
from benchmarks.common import table

PROJECT, LOCATION = "bench", "us-central1"
NAME = f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/42"


def servicer():
    from bpj import types
    from bpj._gen.services.job_service import JobServiceServicer

    job = types.BatchPredictionJob(
        name=NAME,
        display_name="bench",
        model=f"projects/{PROJECT}/locations/{LOCATION}/models/7",
        state=types.JobState.JOB_STATE_RUNNING,
        labels={"team": "bench", "run": "1"},
    )
    job.input_config.instances_format = "jsonl"
    job.input_config.gcs_source.uris.append("gs://bucket/instances.jsonl")
    job.output_config.predictions_format = "jsonl"
    job.output_config.gcs_destination.output_uri_prefix = "gs://bucket/out"
    job.completion_stats.successful_count = 1_000_000
    job.create_time.GetCurrentTime()

    class Jobs(JobServiceServicer):
        def GetBatchPredictionJob(self, request, context):
            return job

        def CreateBatchPredictionJob(self, request, context):
            created = types.BatchPredictionJob()
            created.CopyFrom(request.batch_prediction_job)
            created.name = NAME
            created.state = types.JobState.JOB_STATE_PENDING
            return created

    return Jobs()


def create_request():
    from bpj import types

    job = types.BatchPredictionJob(
        display_name="bench", model=f"projects/{PROJECT}/locations/{LOCATION}/models/7"
    )
    job.input_config.instances_format = "jsonl"
    job.input_config.gcs_source.uris.append("gs://bucket/instances.jsonl")
    job.output_config.predictions_format = "jsonl"
    job.output_config.gcs_destination.output_uri_prefix = "gs://bucket/out"
    return types.CreateBatchPredictionJobRequest(
        parent=f"projects/{PROJECT}/locations/{LOCATION}", batch_prediction_job=job
    )


def create_rows(calls: int) -> list[tuple[str, float]]:
    """Create: a bare grpcio call, bpj's generated client, bpj's job layer (checks, request-id label, one RPC)
    over gRPC and REST, and the official GAPIC client, all on reused connections to one server."""
    import grpc

    import bpj
    from bpj import config, types
    from bpj._gen.services.job_service import CREATE_BATCH_PREDICTION_JOB, JobServiceClient
    from bpj.local.servers.gateway import serve_rest
    from bpj.local.servers.serve import serve_grpc
    from bpj.transport.grpc import GrpcTransport

    jobs = servicer()
    server, rest_server = serve_grpc(jobs), serve_rest(jobs)
    request = create_request()
    rows = []
    try:
        channel = grpc.insecure_channel(server.endpoint)
        bare = channel.unary_unary(
            CREATE_BATCH_PREDICTION_JOB.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=types.BatchPredictionJob.FromString,
        )
        rows.append(
            ("create: bare grpcio unary call (the limit)", timed(lambda: bare(request, timeout=10), calls))
        )
        client = JobServiceClient(GrpcTransport(server.endpoint))
        rows.append(
            (
                "create: bpj JobServiceClient, gRPC",
                timed(lambda: client.create_batch_prediction_job(request), calls),
            )
        )
        kwargs = dict(
            job_display_name="bench",
            model_name="7",
            gcs_source="gs://bucket/instances.jsonl",
            gcs_destination_prefix="gs://bucket/out",
        )
        for label, endpoint, transport in [
            ("create: bpj.BatchPredictionJob.submit, gRPC", server.endpoint, "grpc"),
            ("create: bpj.BatchPredictionJob.submit, REST", rest_server.url, "rest"),
        ]:
            bpj.init(project=PROJECT, location=LOCATION, api_endpoint=endpoint, transport=transport)
            rows.append((label, timed(lambda: bpj.BatchPredictionJob.submit(**kwargs), calls)))
        bpj.init(project=PROJECT, location=LOCATION, api_endpoint=server.endpoint, transport="grpc")
        rows.append(
            ("get: bpj.BatchPredictionJob(name), gRPC", timed(lambda: bpj.BatchPredictionJob(NAME), calls))
        )
        config.reset()

        from google.cloud.aiplatform_v1 import JobServiceClient as Gapic
        from google.cloud.aiplatform_v1 import types as official
        from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcTransport

        gapic = Gapic(transport=JobServiceGrpcTransport(channel=grpc.insecure_channel(server.endpoint)))
        official_request = official.CreateBatchPredictionJobRequest.deserialize(request.SerializeToString())
        rows.append(
            (
                "create: aiplatform_v1 JobServiceClient (GAPIC), gRPC",
                timed(lambda: gapic.create_batch_prediction_job(request=official_request), calls),
            )
        )
        channel.close()
    finally:
        server.stop(None)
        rest_server.stop()
    return rows


class Timing(float):
    """Median microseconds per call, keeping every call's seconds (``samples``) for the picture."""

    samples: array


def timed(fn: Callable[[], object], calls: int) -> Timing:
    """Median microseconds per call, after a warm-up; every call's seconds in ``.samples``."""
    for _ in range(min(50, calls)):
        fn()
    samples = array("d")
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1e9)
    out = Timing(statistics.median(samples) * 1e6)
    out.samples = samples
    return out


def plaintext_rows(calls: int) -> list[tuple[str, float]]:
    import grpc

    from bpj import types
    from bpj._gen.services.job_service import GET_BATCH_PREDICTION_JOB, JobServiceClient
    from bpj.local.servers.gateway import serve_rest
    from bpj.local.servers.serve import serve_grpc
    from bpj.transport.grpc import GrpcTransport
    from bpj.transport.memory import InMemoryTransport
    from bpj.transport.rest import RestTransport

    jobs = servicer()
    server, rest_server = serve_grpc(jobs), serve_rest(jobs)
    request = types.GetBatchPredictionJobRequest(name=NAME)
    rows = []
    try:
        channel = grpc.insecure_channel(server.endpoint)
        bare = channel.unary_unary(
            GET_BATCH_PREDICTION_JOB.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=types.BatchPredictionJob.FromString,
        )
        rows.append(("bare grpcio unary call (the limit)", timed(lambda: bare(request, timeout=10), calls)))
        for label, transport in [
            ("bpj JobServiceClient, gRPC", GrpcTransport(server.endpoint)),
            ("bpj JobServiceClient, REST", RestTransport(rest_server.url)),
            ("bpj JobServiceClient, in-memory", InMemoryTransport(jobs)),
        ]:
            client = JobServiceClient(transport)
            rows.append((label, timed(lambda c=client: c.get_batch_prediction_job(request), calls)))
            transport.close()

        from google.cloud.aiplatform_v1 import JobServiceClient as Gapic
        from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcTransport

        gapic = Gapic(transport=JobServiceGrpcTransport(channel=grpc.insecure_channel(server.endpoint)))
        rows.append(
            (
                "aiplatform_v1 JobServiceClient (GAPIC), gRPC",
                timed(lambda: gapic.get_batch_prediction_job(name=NAME), calls),
            )
        )
        channel.close()
    finally:
        server.stop(None)
        rest_server.stop()
    return rows


def tls_rows(calls: int) -> list[tuple[str, float]]:
    import grpc
    from google.auth.credentials import AnonymousCredentials

    from bpj import types
    from bpj._gen.services.job_service import GET_BATCH_PREDICTION_JOB, JobServiceClient
    from bpj.local.servers.serve import serve_grpc
    from bpj.local.servers.tls import self_signed_cert
    from bpj.transport.grpc import GrpcTransport

    key, cert = self_signed_cert(("localhost", "127.0.0.1"))
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(cert)
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = f.name
    server = serve_grpc(servicer(), tls=(key, cert))
    endpoint = f"localhost:{server.port}"
    request = types.GetBatchPredictionJobRequest(name=NAME)
    rows = []
    try:
        channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(cert))
        bare = channel.unary_unary(
            GET_BATCH_PREDICTION_JOB.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=types.BatchPredictionJob.FromString,
        )
        rows.append(
            ("bare grpcio unary call, TLS (the limit)", timed(lambda: bare(request, timeout=10), calls))
        )
        client = JobServiceClient(GrpcTransport(endpoint, root_certificates=cert))
        rows.append(
            ("bpj JobServiceClient, gRPC TLS", timed(lambda: client.get_batch_prediction_job(request), calls))
        )

        from google.cloud import aiplatform

        aiplatform.init(
            project=PROJECT, location=LOCATION, api_endpoint=endpoint, credentials=AnonymousCredentials()
        )
        sdk_calls = max(20, calls // 20)
        rows.append(
            (
                "aiplatform.BatchPredictionJob(name), TLS",
                timed(lambda: aiplatform.BatchPredictionJob(NAME), sdk_calls),
            )
        )
        channel.close()
        client.close()
    finally:
        server.stop(None)
        os.unlink(f.name)
    return rows


def report(rows: list[tuple[str, float]]) -> str:
    limit = rows[0][1]
    return table(
        [(label, f"{us:.0f}", f"{us / limit:.2f}x") for label, us in rows],
        ("client (same server, reused connection)", "median us/call", "vs limit"),
    )


def phase(name: str, rows: list[tuple[str, float]]) -> plot.Phase:
    """A table of rows as one phase of the picture: calls/s from the median, each call's time, the ratio to
    the first row (the limit) as the table prints it."""
    limit = rows[0][1]
    sides = [
        plot.Side(
            label,
            rate=1e6 / us,
            ratio=us / limit,
            latencies=getattr(us, "samples", ()),
        )
        for label, us in rows
    ]
    return plot.Phase(
        name, sides, unit="calls/s (1 / median time)", call="call", ratio_means="median time / the limit's"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    plot.add_argument(ap)
    args = ap.parse_args()
    plot.check(args)
    tables = [
        ("get, plaintext", plaintext_rows(args.calls)),
        ("create (and a get through the job layer)", create_rows(args.calls)),
        ("get over TLS", tls_rows(args.calls)),
    ]
    for k, (_, rows) in enumerate(tables):
        print(("\n" if k else "") + report(rows))
    plot.save(
        args,
        [phase(name, rows) for name, rows in tables],
        "bench_get: one call's latency, every client against the same local server, reused connection",
        f"{args.calls:,} calls each after a warm-up (the official high-level SDK: {max(20, args.calls // 20):,})",
    )


if __name__ == "__main__":
    main()
