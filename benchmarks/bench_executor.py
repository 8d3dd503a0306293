"""A batch prediction job on the local stack against a plain script doing the same work, same data, same server.

    python -m benchmarks.bench_executor [--instances 1000000] [--batch-size 64] [--repeat 1]

Trains a LogisticRegression on scikit-learn's bundled iris data, writes a JSONL input of N iris rows (4 floats
each) to the stack's fake-gcs-server, and then runs, in this one process:

  plain   one GET of the input with the stack's Gcs client, json.loads per line, model.predict on batches of
          B rows, json.dumps({"instance": ..., "prediction": ...}) per line, streamed back to GCS as
          predictions_0001.jsonl under a directory marker, as the job writes it
  job     CreateBatchPredictionJob with manual_batch_tuning_parameters.batch_size=B through bpj's generated
          JobServiceClient over gRPC, then Get every 20 ms until the job is terminal; timed from the Create
          call to the Get that sees SUCCEEDED

The job's outputs are checked: completion_stats and the lines of its predictions files both equal N, and
the first output line equals the plain script's. Prints a table with the best of ``--repeat`` runs and the
job/plain ratio (target: >= 0.7x). Never asserts on times. The CPU column is this process's user+system
time over the same span (fake-gcs-server excluded): steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from typing import Any

from benchmarks import plot
from benchmarks.common import table
from bpj.cli.plot import Samples

SKLEARN_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"
PARENT = "projects/bpj-local/locations/us-central1"
INPUT = "gs://bench-in/iris.jsonl"
SAMPLES = 10_000  # progress points and Get times kept per run


def train() -> tuple[Any, list[list[float]]]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    return model, data.data.tolist()


def input_bytes(rows: list[list[float]], n: int) -> bytes:
    lines = [json.dumps(r) for r in rows]
    return ("\n".join(lines[i % len(lines)] for i in range(n)) + "\n").encode()


def upload_model(stack: Any, model: Any, transport: Any) -> str:
    import joblib

    from bpj import types
    from bpj._gen.services.model_service import ModelServiceClient

    buf = io.BytesIO()
    joblib.dump(model, buf)
    stack.gcs.write("gs://bench-models/iris/model.joblib", buf.getvalue())
    m = types.Model(display_name="iris", artifact_uri="gs://bench-models/iris")
    m.container_spec.image_uri = SKLEARN_IMAGE
    op = ModelServiceClient(transport).upload_model(types.UploadModelRequest(parent=PARENT, model=m))
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return response.model


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plain(gcs: Any, model: Any, batch_size: int, out_dir: str, progress: Samples) -> tuple[float, str]:
    """The work of a job written as one script; returns (seconds, first output line). Adds (seconds, instances
    done) to ``progress`` after every batch."""
    import numpy

    t = time.perf_counter()
    lines = gcs.read(INPUT).decode().splitlines()
    gcs.write(out_dir + "/", b"", content_type="application/x-directory")
    first = ""
    with gcs.writer(f"{out_dir}/predictions_0001.jsonl", content_type="application/jsonl") as w:
        for start in range(0, len(lines), batch_size):
            instances = [json.loads(line) for line in lines[start : start + batch_size]]
            predictions = model.predict(numpy.asarray(instances)).tolist()
            out = "".join(
                json.dumps({"instance": i, "prediction": p}) + "\n"
                for i, p in zip(instances, predictions, strict=True)
            )
            first = first or out.split("\n", 1)[0]
            w.write(out.encode())
            progress.add(time.perf_counter() - t, start + len(instances))
    return time.perf_counter() - t, first


def job(
    jobs: Any, model_name: str, batch_size: int, out_prefix: str, progress: Samples, gets: Samples
) -> tuple[float, Any]:
    """Create a job and poll it to a terminal state; returns (seconds from Create to SUCCEEDED, the job).
    Adds (seconds, instances done) to ``progress`` and each Get's seconds to ``gets`` at every poll."""
    from bpj import types

    S = types.JobState
    terminal = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
    spec = types.BatchPredictionJob(display_name="bench", model=model_name)
    spec.input_config.instances_format = "jsonl"
    spec.input_config.gcs_source.uris.append(INPUT)
    spec.output_config.predictions_format = "jsonl"
    spec.output_config.gcs_destination.output_uri_prefix = out_prefix
    spec.manual_batch_tuning_parameters.batch_size = batch_size
    t = time.perf_counter()
    created = jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=spec)
    )
    get = types.GetBatchPredictionJobRequest(name=created.name)
    while True:
        asked = time.perf_counter()
        current = jobs.get_batch_prediction_job(get)
        answered = time.perf_counter()
        gets.add(answered - asked)
        stats = current.completion_stats
        progress.add(answered - t, stats.successful_count + stats.failed_count)
        if current.state in terminal:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - t
    if current.state != S.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"the job ended {S.Name(current.state)}: {current.error}")
    return elapsed, current


def check_outputs(gcs: Any, finished: Any, n: int, plain_first: str) -> None:
    stats = finished.completion_stats
    if (stats.successful_count, stats.failed_count) != (n, 0):
        raise SystemExit(
            f"completion_stats {stats.successful_count} ok, {stats.failed_count} failed; want {n}"
        )
    files = gcs.list(f"{finished.output_info.gcs_output_directory}/predictions_*")
    bodies = [gcs.read(u) for u in files]
    count = sum(b.count(b"\n") for b in bodies)
    if count != n:
        raise SystemExit(f"the job wrote {count} prediction lines in {len(files)} files, not {n}")
    first = bodies[0].split(b"\n", 1)[0].decode()
    if json.loads(first) != json.loads(plain_first):
        raise SystemExit(f"first lines differ: job {first!r}, plain {plain_first!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is shown")
    plot.add_argument(parser)
    args = parser.parse_args()
    plot.check(args)
    n, b = args.instances, args.batch_size

    from bpj._gen.services.job_service import JobServiceClient
    from bpj.local.stack import LocalStack
    from bpj.transport.grpc import GrpcTransport

    model, rows = train()
    with LocalStack() as stack:
        gcs = stack.gcs
        for bucket in ("bench-models", "bench-in", "bench-out"):
            gcs.create_bucket(bucket)
        data = input_bytes(rows, n)
        gcs.write(INPUT, data, content_type="application/jsonl")
        transport = GrpcTransport(stack.api_endpoint)
        try:
            model_name = upload_model(stack, model, transport)
            jobs = JobServiceClient(transport)
            plain_runs, job_runs = [], []
            for r in range(args.repeat):
                c = cpu()
                plain_progress = Samples(SAMPLES, width=2)
                seconds, first = plain(gcs, model, b, f"gs://bench-out/plain-{r}", plain_progress)
                plain_runs.append((seconds, cpu() - c, plain_progress, Samples(1)))
                c = cpu()
                job_progress, gets = Samples(SAMPLES, width=2), Samples(SAMPLES)
                seconds, finished = job(jobs, model_name, b, f"gs://bench-out/job-{r}", job_progress, gets)
                job_runs.append((seconds, cpu() - c, job_progress, gets))
                check_outputs(gcs, finished, n, first)
        finally:
            transport.close()

    best_plain = min(plain_runs, key=lambda run: run[0])
    best_job = min(job_runs, key=lambda run: run[0])
    (p, p_cpu), (j, j_cpu) = best_plain[:2], best_job[:2]
    print(f"{n:,} iris instances ({len(data) / 1e6:.1f} MB JSONL), batch size {b}, best of {args.repeat}")
    print(
        table(
            [
                ("plain script", f"{p:.2f}", f"{p_cpu:.2f}", f"{n / p:,.0f}", "1.00x"),
                (
                    "bpj job (Create -> SUCCEEDED)",
                    f"{j:.2f}",
                    f"{j_cpu:.2f}",
                    f"{n / j:,.0f}",
                    f"{p / j:.2f}x",
                ),
            ],
            ("path", "seconds", "CPU s", "instances/s", "vs plain"),
        )
    )
    print(f"job/plain throughput ratio: {p / j:.2f}x (target >= 0.70x); outputs checked: {n:,} predictions")
    sides = [
        plot.Side(
            label,
            rate=n / seconds,
            ratio=p / seconds,
            timeline=[(0.0, 0.0), *progress.rows()],
            latencies=calls,
        )
        for label, (seconds, _, progress, calls) in [
            ("plain script", best_plain),
            ("bpj job, Create to SUCCEEDED", best_job),
        ]
    ]
    plot.save(
        args,
        [
            plot.Phase(
                f"{n:,} iris instances, batch size {b}",
                sides,
                unit="instances/s",
                items="instances",
                call="Get",
                ratio_means="throughput / the plain script's",
            )
        ],
        "bench_executor: a job on the local stack against a plain script doing the same work",
        f"{len(data) / 1e6:.1f} MB JSONL on the stack's GCS; the job polled every 20 ms; the best of {args.repeat} run(s)",
    )


if __name__ == "__main__":
    main()
