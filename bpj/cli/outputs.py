"""``bpj outputs read|export``: a job's predictions (or errors) through bpj's fast readers."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Any

from bpj import errors
from bpj.cli.common import add_json, dumps, print_json, require_reachable, stderr, vertex_reachable


def reader_for(source: str, *, kind: str = "predictions", workers: int | None = None) -> Any:
    """A reader over ``source``: a job (ID or resource name), a gs:// output directory or pattern, or a
    bq://project.dataset.table. ``kind="errors"`` reads the errors output instead of the predictions."""
    from bpj import config, outputs

    s = config.settings()
    check_source(source, kind)
    if source.startswith("gs://"):
        require_reachable(s.gcs_endpoint, "Cloud Storage endpoint", "check BPJ_GCS_ENDPOINT")
        return outputs.read_gcs(source, kind=kind, max_workers=workers or None)
    if source.startswith("bq://"):
        if kind == "errors":
            raise errors.UsageError(
                "--errors with a bq:// table: give the errors table itself (bq://project.dataset.errors)"
            )
        return _bigquery(source, workers)
    from bpj.jobs import BatchPredictionJob

    vertex_reachable()
    job = BatchPredictionJob(source)
    info = job.output_info
    if info.gcs_output_directory:
        require_reachable(s.gcs_endpoint, "Cloud Storage endpoint", "check BPJ_GCS_ENDPOINT")
        reader = job.outputs(max_workers=workers or None)  # raises unless the job succeeded
        return reader.errors() if kind == "errors" and isinstance(reader, outputs.GcsReader) else reader
    if info.bigquery_output_dataset:
        table = "errors" if kind == "errors" else info.bigquery_output_table
        return _bigquery(f"{info.bigquery_output_dataset}.{table}", workers)
    job.outputs()  # raises the reason there is nothing to read (not succeeded, no outputs)
    raise errors.UsageError(f"{job.resource_name} has no outputs to read")


def check_source(source: str, kind: str = "predictions") -> None:
    """A UsageError naming SOURCE for anything that is not a job, a gs:// URI or a bq:// table (no call)."""
    from bpj import config, rules, validation

    if source.startswith("gs://"):
        rules.gcs(source, "SOURCE", what="gs://bucket/path (an output directory or pattern)")
    elif source.startswith("bq://"):
        rules.bq(source, "SOURCE", table=True)
        if kind == "errors":
            raise errors.UsageError(
                "--errors with a bq:// table: give the errors table itself (bq://project.dataset.errors)"
            )
    else:
        s = config.settings()
        validation.job_name(source, s.project, s.location, "SOURCE")


def check_common(args: argparse.Namespace) -> None:
    """Every argument of read and export, before any connection."""
    from bpj import validation

    check_source(args.source, args.kind)
    if args.workers is not None:
        validation.positive_int(args.workers, "--workers", zero=True)
    if getattr(args, "n", None) is not None:
        validation.positive_int(args.n, "-n", zero=True)


def _bigquery(uri: str, workers: int | None) -> Any:
    from bpj import config, outputs

    endpoint = config.settings().bigquery_storage_endpoint
    require_reachable(endpoint, "BigQuery Storage endpoint", "check BPJ_BIGQUERY_STORAGE_ENDPOINT")
    return outputs.read_bigquery(uri, **({"max_workers": workers} if workers else {}))


def read(args: argparse.Namespace) -> int:
    check_common(args)
    reader = reader_for(args.source, kind=args.kind, workers=args.workers)
    if args.count:
        rows = sum(batch.num_rows for batch in reader.iter_batches())
        if args.json:
            print_json({"rows": rows})
        else:
            print(rows)
        return 0
    records = reader.records()
    try:
        chosen = records if args.all else itertools.islice(records, args.n)
        if args.json:
            print_json(list(chosen))
        else:
            for record in chosen:
                print(dumps(record))
    finally:
        records.close()  # stops the reader's workers when we stop early
    return 0


def export(args: argparse.Namespace) -> int:
    to_stdout = args.path == "-"
    extension = os.path.splitext(args.path)[1].lstrip(".").lower()
    if (
        not to_stdout
        and args.format is None
        and extension not in ("jsonl", "json", "ndjson", "csv", "parquet")
    ):
        raise errors.UsageError(
            f"cannot tell the format of {args.path!r}: use .jsonl, .csv or .parquet, or --format (- is stdout)"
        )
    if to_stdout and args.json:
        raise errors.UsageError(
            "--json and - (stdout) both write to stdout: give a file, or leave out --json"
        )
    check_common(args)
    reader = reader_for(args.source, kind=args.kind, workers=args.workers)
    if to_stdout:
        rows = _to_stdout(reader, args.format or "jsonl")
        stderr(f"{rows} rows -> stdout")
        return 0
    rows = reader.export(args.path, format=args.format)
    if args.json:
        print_json({"rows": rows, "path": args.path})
    else:
        print(f"{rows} rows -> {args.path}")
    return 0


def _to_stdout(reader: Any, fmt: str) -> int:
    """Every record on stdout: JSON lines as they arrive; CSV or Parquet written whole to a temporary file
    first (their writers need a file), then copied."""
    import shutil
    import tempfile

    if fmt == "jsonl":
        rows = 0
        records = reader.records()
        try:
            for record in records:
                sys.stdout.write(dumps(record) + "\n")
                rows += 1
        finally:
            records.close()
        sys.stdout.flush()
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"out.{fmt}")
        rows = int(reader.export(path, format=fmt))
        sys.stdout.flush()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return rows


def add_outputs(sub: Any, parent: argparse.ArgumentParser) -> None:
    outputs = sub.add_parser("outputs", help="read or export a job's predictions")
    osub = outputs.add_subparsers(dest="action", required=True, metavar="ACTION")
    source_help = "a job (ID or resource name), a gs:// output directory, or bq://project.dataset.table"

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("source", help=source_help)
        p.add_argument(
            "--errors",
            dest="kind",
            action="store_const",
            const="errors",
            default="predictions",
            help="the errors output instead of the predictions",
        )
        p.add_argument("--workers", type=int, help="parallel downloads / streams")

    p = osub.add_parser("read", parents=[parent], help="print records (one JSON object a line) or a count")
    common(p)
    p.add_argument("-n", type=int, default=10, help="records to print (default 10)")
    p.add_argument("--all", action="store_true", help="print every record")
    p.add_argument("--count", action="store_true", help="print only the number of records")
    add_json(p)
    p.set_defaults(run=read)

    p = osub.add_parser(
        "export", parents=[parent], help="write every record to a .jsonl, .csv or .parquet file"
    )
    common(p)
    p.add_argument(
        "path", help="where to write; the extension picks the format; - writes to stdout (JSON lines)"
    )
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="override the extension")
    add_json(p)
    p.set_defaults(run=export)
