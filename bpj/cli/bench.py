"""``bpj bench``: one real batch prediction job of N generated instances, timed phase by phase.

It writes N instances (the ``--instance`` JSON values, cycled) as JSONL under the given gs:// prefix,
creates a job on the given model through the configured endpoint (the local stack or Vertex AI), waits for
it, reads every prediction back with bpj's reader, and reports seconds and throughput per phase. Nothing is
simulated; the input and the outputs stay where they were written.

Per phase it also keeps the time of each call (the upload, the Create, every Get of the wait, the wait for
every batch of the read) and the progress over time (instances done at each Get, rows read at each batch),
at most SAMPLES of each; ``--plot out.png`` draws them (matplotlib: pip install 'bpj[bench]').
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from bpj import errors
from bpj.cli.common import add_json, print_json, print_table, require_reachable, stderr, vertex_reachable

# bpj.cli.plot loads in run(): its dataclasses would cost every bpj command milliseconds.
if TYPE_CHECKING:
    from bpj.cli.plot import Samples

IRIS_ROW = "[5.1, 3.5, 1.4, 0.2]"
# create()'s parameters as the bench flags that set them, for the messages of its checks.
BENCH_FLAGS = {
    "model_name": "--model",
    "gcs_source": "--gcs-prefix",
    "gcs_destination_prefix": "--gcs-prefix",
    "bigquery_destination_prefix": "--bigquery-destination-prefix",
    "machine_type": "--machine-type",
    "starting_replica_count": "--starting-replica-count",
    "max_replica_count": "--max-replica-count",
    "batch_size": "--batch-size",
}
# Polling bounds for the timed wait: the run phase is measured to within this many seconds.
POLL, MAX_POLL = 0.1, 2.0
# Per-call timings and progress points kept per phase (a uniform sample beyond that).
SAMPLES = 10_000


class TimedCalls:
    """A client whose every method call adds its seconds to ``times``."""

    def __init__(self, client: Any, times: Samples) -> None:
        self._client, self._times = client, times

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._times.add(time.perf_counter() - t)

        return call


class Progress:
    """The wait's progress hook: records (seconds, instances done) after every Get, then shows the usual
    progress line (when there is one). ``offset``: seconds of the phase before the wait began."""

    def __init__(self, job: Any, timeline: Samples, shown: Any, offset: float = 0.0) -> None:
        self.job, self.timeline, self.shown, self.offset = job, timeline, shown, offset

    def show(self, elapsed: float) -> None:
        stats = self.job.gca_resource.completion_stats
        self.timeline.add(self.offset + elapsed, stats.successful_count + stats.failed_count)
        if self.shown is not None:
            self.shown.show(elapsed)

    def end(self) -> None:
        if self.shown is not None:
            self.shown.end()


def instances(args: argparse.Namespace) -> list[str]:
    """The instances to cycle through, each one JSON text on one line."""
    texts = list(args.instance or [])
    if args.instances_file:
        try:
            with open(args.instances_file, encoding="utf-8") as f:
                texts += [line for line in f.read().splitlines() if line.strip()]
        except OSError as e:
            raise errors.UsageError(f"--instances-file: {e.strerror}: {args.instances_file}") from None
    texts = texts or [IRIS_ROW]
    out = []
    for text in texts:
        try:
            out.append(json.dumps(json.loads(text)))
        except ValueError as e:
            raise errors.UsageError(f"an instance must be JSON, got {text!r}: {e}") from None
    return out


def _storage(s: Any) -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    from bpj import config

    if s.credentials is None and config.parse_endpoint(s.gcs_endpoint).is_loopback:
        from google.auth.credentials import AnonymousCredentials

        credentials: Any = AnonymousCredentials()
    else:
        credentials = config.resolve_credentials(s, s.gcs_endpoint)
    return storage.Client(
        project=s.project, credentials=credentials, client_options={"api_endpoint": s.gcs_endpoint}
    )


def write_input(s: Any, uri: str, data: bytes) -> None:
    """Upload ``data`` to ``uri``; on a local (loopback) GCS, make the bucket when it is missing."""
    from bpj import config

    bucket_name, _, name = uri.removeprefix("gs://").partition("/")
    client = _storage(s)
    bucket = client.bucket(bucket_name)
    if config.parse_endpoint(s.gcs_endpoint).is_loopback and not bucket.exists():
        client.create_bucket(bucket_name)
    try:
        bucket.blob(name).upload_from_string(data, content_type="application/jsonl")
    except Exception as e:  # google.api_core errors: say where, in one line
        message = getattr(e, "message", None) or str(e)
        raise errors.Unavailable(f"writing {uri} failed: {message}") from None


def run(args: argparse.Namespace) -> int:
    from bpj import clients, gcs_uri, rules, steps
    from bpj.cli import plot
    from bpj.cli.plot import Samples
    from bpj.cli.resources import flag_names
    from bpj.jobs import BatchPredictionJob, WaitTimeout, check_create, settle
    from bpj.progress import WaitProgress

    if args.n <= 0:
        raise errors.UsageError(f"-n must be > 0, got {args.n}")
    if args.plot:
        plot.require(args.plot)
    prefix = args.gcs_prefix.rstrip("/")
    if not prefix.startswith("gs://") or len(prefix) <= len("gs://"):
        raise errors.UsageError(f"--gcs-prefix must be gs://bucket[/path], got {args.gcs_prefix!r}")
    gcs_uri.split(prefix + "/", error=errors.UsageError)
    rows = instances(args)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    run_dir = f"{prefix}/bench-{stamp}"
    input_uri = f"{run_dir}/instances.jsonl"
    create_arguments: dict[str, Any] = dict(
        job_display_name=f"bpj-bench-{stamp}",
        model_name=args.model,
        instances_format="jsonl",
        predictions_format="bigquery" if args.bigquery_destination_prefix else "jsonl",
        gcs_source=input_uri,
        gcs_destination_prefix=None if args.bigquery_destination_prefix else f"{run_dir}/out",
        bigquery_destination_prefix=args.bigquery_destination_prefix,
        machine_type=args.machine_type,
        starting_replica_count=args.starting_replica_count,
        max_replica_count=args.max_replica_count,
        batch_size=args.batch_size,
        labels={"bpj_bench": "true"},
        sync=False,
    )
    with flag_names(BENCH_FLAGS):  # every argument checked before any connection
        check_create(**create_arguments)
        if args.timeout is not None:
            rules.timeout(args.timeout, "--timeout")
    s = vertex_reachable()
    require_reachable(s.gcs_endpoint, "Cloud Storage endpoint", "check BPJ_GCS_ENDPOINT")
    data = ("\n".join(itertools.islice(itertools.cycle(rows), args.n)) + "\n").encode()
    phases: list[dict[str, Any]] = []
    kept: list[tuple[Samples, Samples | None]] = []  # per phase: seconds per call, progress (or None)

    def phase(
        name: str,
        seconds: float,
        count: float | None = None,
        unit: str | None = None,
        calls: Samples | None = None,
        timeline: Samples | None = None,
    ) -> None:
        rate = None if count is None else count / max(seconds, 1e-9)
        if calls is None:
            calls = Samples(1)
            calls.add(seconds)
        phases.append(
            {"phase": name, "seconds": round(seconds, 4), "rate": rate, "unit": unit, **_latency(calls)}
        )
        kept.append((calls, timeline))
        if not args.json:
            stderr(f"bench: {name}: {seconds:.2f}s")

    t = time.perf_counter()
    write_input(s, input_uri, data)
    phase("write input", time.perf_counter() - t, len(data) / 1e6, "MB/s")

    start = time.perf_counter()
    job = BatchPredictionJob.create(**create_arguments)
    phase("create", time.perf_counter() - start)
    # job.wait(), with every Get timed and the counts of every poll kept.
    gets, progress = Samples(SAMPLES), Samples(SAMPLES, width=2)
    pacer = steps.Pacer(POLL, MAX_POLL, args.timeout)
    hook = Progress(job, progress, WaitProgress.wanted(job), offset=time.perf_counter() - start)
    client = TimedCalls(clients.job_service(), gets)
    if not steps.run(steps.wait_job(job, pacer, hook), steps.one(client)):
        raise WaitTimeout(job, args.timeout or 0.0)
    settle(job, job)
    phase("run (create to end)", time.perf_counter() - start, args.n, "instances/s", gets, progress)

    t = time.perf_counter()
    read = nbytes = 0
    waits, rows_read = Samples(SAMPLES), Samples(SAMPLES, width=2)
    batches = iter(job.outputs().iter_batches())
    while True:
        before = time.perf_counter()
        batch = next(batches, None)
        now = time.perf_counter()
        if batch is None:
            break
        waits.add(now - before)
        read += batch.num_rows
        nbytes += batch.nbytes
        rows_read.add(now - t, read)
    phase("read outputs", time.perf_counter() - t, read, "rows/s", waits, rows_read)
    total = time.perf_counter() - start
    stats = job.completion_stats
    info = job.output_info
    report = {
        "instances": args.n,
        "input": input_uri,
        "endpoint": s.vertex_endpoint,
        "job": job.resource_name,
        "state": job.state.name if hasattr(job.state, "name") else str(job.state),
        "output": info.gcs_output_directory or f"{info.bigquery_output_dataset}.{info.bigquery_output_table}",
        "successful": stats.successful_count,
        "failed": stats.failed_count,
        "predictions_read": read,
        "arrow_mb_read": round(nbytes / 1e6, 3),
        "phases": phases,
        "total_seconds": round(total, 4),
        "throughput": args.n / max(total, 1e-9),
    }
    if args.json:
        print_json(report)
    else:
        print(
            f"{args.n:,} instances ({len(data) / 1e6:.1f} MB JSONL) on {args.model} via {s.vertex_endpoint}"
        )
        print_table(
            [(p["phase"], f"{p['seconds']:.2f}", _rate(p)) for p in phases]
            + [("total (create to outputs read)", f"{total:.2f}", f"{args.n / total:,.1f} instances/s")],
            ("PHASE", "SECONDS", "THROUGHPUT"),
        )
        print(
            f"job: {job.resource_name} ({report['state']}); {stats.successful_count} ok, {stats.failed_count} failed"
        )
        print(f"input: {input_uri}\noutput: {report['output']}")
    if args.plot:
        _draw(args.plot, report, kept)
        if not args.json:
            stderr(f"bench: wrote {args.plot}")
    if read != stats.successful_count or stats.successful_count + stats.failed_count != args.n:
        raise errors.DataLoss(
            f"read {read} predictions; the job reports {stats.successful_count} ok and "
            f"{stats.failed_count} failed of {args.n} instances"
        )
    return 0


def _latency(calls: Samples) -> dict[str, Any]:
    """The report's summary of a phase's call times: count, median and p99 seconds (of the kept sample)."""
    from bpj.cli.plot import quantile

    xs = sorted(calls)
    if not xs:
        return {"calls": 0}
    return {
        "calls": calls.seen,
        "median_call_seconds": round(quantile(xs, 0.5), 6),
        "p99_call_seconds": round(quantile(xs, 0.99), 6),
    }


_CALL = {"write input": "upload", "create": "Create", "run (create to end)": "Get", "read outputs": "batch"}
_ITEMS = {"run (create to end)": "instances", "read outputs": "rows"}


def _draw(path: str, report: dict[str, Any], kept: list[tuple[Samples, Samples | None]]) -> None:
    from bpj.cli import plot

    phases = []
    for p, (calls, timeline) in zip(report["phases"], kept, strict=True):
        side = plot.Side(
            "bpj",
            rate=p["rate"],
            seconds=p["seconds"],
            latencies=calls.values,
            timeline=[] if timeline is None else [(0.0, 0.0), *timeline.rows()],
        )
        phases.append(
            plot.Phase(
                p["phase"],
                [side],
                unit=p["unit"],
                items=_ITEMS.get(p["phase"], "items"),
                call=_CALL[p["phase"]],
            )
        )
    title = (
        f"bpj bench: {report['instances']:,} instances, {report['total_seconds']:.1f} s from create to outputs "
        f"read ({report['throughput']:,.0f} instances/s)"
    )
    where = f"{plot.machine()}; {report['endpoint']}; job {report['job']} ({report['state']})"
    plot.draw(phases, path, title=title, subtitle=where)


def _rate(phase: dict[str, Any]) -> str:
    return "" if phase["rate"] is None else f"{phase['rate']:,.1f} {phase['unit']}"


def add_bench(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench",
        parents=[parent],
        help="run one real job of N instances and report the throughput of each phase",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model ID or projects/.../models/ID[@version]")
    p.add_argument(
        "--gcs-prefix", required=True, help="gs://bucket[/path] to write the input (and outputs) under"
    )
    p.add_argument("-n", "--instances", dest="n", type=int, default=10_000, help="instances (default 10000)")
    p.add_argument(
        "--instance",
        action="append",
        metavar="JSON",
        help=f"an instance, cycled to make N (repeatable; default {IRIS_ROW}, an iris row)",
    )
    p.add_argument("--instances-file", metavar="JSONL", help="instances to cycle, one JSON value a line")
    p.add_argument("--batch-size", type=int, help="instances per prediction call")
    p.add_argument("--bigquery-destination-prefix", metavar="BQ_URI", help="write to BigQuery instead of GCS")
    p.add_argument("--machine-type", help="dedicated resources on Vertex AI, e.g. n1-standard-4")
    p.add_argument("--starting-replica-count", type=int)
    p.add_argument("--max-replica-count", type=int)
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after this long")
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="draw each phase's throughput and time per call into this PNG (pip install 'bpj[bench]')",
    )
    add_json(p)
    p.set_defaults(run=run)
