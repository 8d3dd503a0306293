"""An output past one machine: a Dask LocalCluster of 1, 2 and 4 worker processes against the single-process
reader, on the same output.

    python -m benchmarks.bench_engines [--rows 20000000] [--objects 32] [--repeat 3] [--workers 1 2 4] [--ray]

The local stack's GCS (bpj.local.gcs.GcsServer: fake-gcs-server behind its guard, on disk in a temporary
directory) holds ``--rows`` small prediction lines (``{"key": i, "prediction": i % 3, "score": ...}``, about
50 bytes each) in ``--objects`` JSONL objects, written straight from Arrow. Measured, each the best of
``--repeat`` runs after one untimed warm-up run (same server, same objects, the cluster already started):

  single   ``read_gcs(dir).to_arrow()``: every row in one process (download threads, decoding in C++)
  dask N   ``read_gcs(dir).to_dask()`` on a LocalCluster of N worker processes with one thread each,
           reduced on the workers (``len`` and the sum of ``key``, checked against the rows written), so
           what is timed is reading every row into the workers, not shipping them back
  ray      (``--ray``) ``read_gcs(dir).to_ray()`` on a local Ray with one CPU per core, its blocks reduced
           by remote tasks where they lie

Prints rows/s and each side's ratio to the single-process reader; never asserts. The GCS server shares the
machine's cores with the readers, and N above the core count measures oversubscription, not scaling.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import plot
from benchmarks.common import table

BUCKET = "bench-engines"
PREFIX = "job/prediction-model-2026-12-02T00:00:00.000Z"


def object_lines(start: int, stop: int) -> bytes:
    """JSONL for rows ``start..stop-1``, built by Arrow in C++ (a Python loop would take minutes at 20 M)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pa.array(np.arange(start, stop, dtype=np.int64))
    scores = pa.array(np.round((np.arange(start, stop) % 1000) / 1000.0, 3))
    parts: list[Any] = [
        pa.scalar('{"key": '),
        pc.cast(keys, pa.string()),
        pa.scalar(', "prediction": '),
        pc.cast(pc.bit_wise_and(keys, pa.scalar(1, pa.int64())), pa.string()),
        pa.scalar(', "score": '),
        pc.cast(scores, pa.string()),
        pa.scalar("}\n"),
    ]
    lines = pc.binary_join_element_wise(*parts, "")
    whole = pc.binary_join(
        pa.LargeListArray.from_arrays([0, len(lines)], lines.cast(pa.large_string())),
        pa.scalar("", pa.large_string()),
    )
    return whole[0].as_py().encode()


def write_output(gcs: Any, rows: int, objects: int) -> tuple[str, int]:
    """The output directory, and its size in bytes."""
    gcs.create_bucket(BUCKET)
    size = 0
    step = -(-rows // objects)
    for n, start in enumerate(range(0, rows, step), 1):
        data = object_lines(start, min(rows, start + step))
        gcs.write(f"gs://{BUCKET}/{PREFIX}/predictions_{n:04d}.jsonl", data, content_type="application/jsonl")
        size += len(data)
    gcs.write(f"gs://{BUCKET}/{PREFIX}/", b"")
    return f"gs://{BUCKET}/{PREFIX}", size


def best(run: Any, repeat: int) -> tuple[float, list[float]]:
    """One untimed warm-up call, then the best of ``repeat`` timed ones (and every time)."""
    run()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times), times


def _count_and_sum(block: Any) -> tuple[int, int]:
    import pyarrow.compute as pc

    return block.num_rows, pc.sum(block.column("key")).as_py() or 0


def on_ray(reader: Any, args: argparse.Namespace, expected_sum: int) -> tuple[str, str, float, list[float]]:
    """``to_ray()`` on a local Ray with the machine's cores, reduced there (count and sum of ``key``)."""
    import ray

    from bpj.outputs.reader import cores

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no report to Ray's usage-stats server
    ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        reduce = ray.remote(_count_and_sum)

        def run() -> None:
            # each block reduced where it lies (Ray Data's own aggregate shuffles, and costs seconds more)
            parts = ray.get([reduce.remote(block) for block in reader.to_ray().to_arrow_refs()])
            got = (sum(p[0] for p in parts), sum(p[1] for p in parts))
            assert got == (args.rows, expected_sum), got

        t, runs = best(run, args.repeat)
    finally:
        ray.shutdown()
    return (f"ray {cores()} CPUs", "to_ray(), reduced", t, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--objects", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--ray", action="store_true", help="also read with to_ray() on a local Ray of the cores")
    plot.add_argument(ap)
    args = ap.parse_args()
    plot.check(args)

    from distributed import Client, LocalCluster

    from bpj.gcs import Gcs
    from bpj.local.gcs import GcsServer
    from bpj.outputs import read_gcs

    expected_sum = args.rows * (args.rows - 1) // 2
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp, GcsServer(Path(tmp)) as server:
        t = time.perf_counter()
        uri, size = write_output(Gcs(server.endpoint), args.rows, args.objects)
        print(
            f"wrote {args.rows:,} rows, {size / 1e6:,.0f} MB in {args.objects} objects ({time.perf_counter() - t:.1f} s)"
        )
        reader = read_gcs(uri, endpoint=server.endpoint, progress=False)

        def single() -> None:
            got = reader.to_arrow()
            assert got.num_rows == args.rows, got.num_rows

        t_single, runs_single = best(single, args.repeat)
        results = [("single process", "to_arrow()", t_single, runs_single)]
        for n in args.workers:
            with (
                LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=40,
                ) as cluster,
                Client(cluster),
            ):

                def on_dask() -> None:
                    frame = reader.to_dask()
                    count, total = frame.map_partitions(len).sum(), frame["key"].sum()
                    got = tuple(int(v) for v in __import__("dask").compute(count, total))
                    assert got == (args.rows, expected_sum), got

                t_n, runs_n = best(on_dask, args.repeat)
            results.append((f"dask {n} worker{'s' if n > 1 else ''}", "to_dask(), reduced", t_n, runs_n))
        if args.ray:
            results.append(on_ray(reader, args, expected_sum))

    rows = [
        (what, how, f"{args.rows / t:,.0f}", f"{size / 1e6 / t:,.0f}", f"{t:.2f}", f"{t_single / t:.2f}")
        for what, how, t, _ in results
    ]
    print(
        table(rows, ("side", "what", "rows/s", "MB/s", "best s", "vs single")),
    )
    phase = plot.Phase(
        f"{args.rows / 1e6:g} M rows",
        [
            plot.Side(
                what, rate=args.rows / t / 1e6, runs=[args.rows / r / 1e6 for r in runs], ratio=t_single / t
            )
            for what, _, t, runs in results
        ],
        unit="M rows/s",
        ratio_means="it / single",
    )
    plot.save(
        args, [phase], "bpj outputs on a Dask LocalCluster", f"{args.objects} objects, {size / 1e6:,.0f} MB"
    )


if __name__ == "__main__":
    main()
