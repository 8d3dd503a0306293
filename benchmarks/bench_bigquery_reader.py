"""bpj's BigQuery reader against the limit and the official paths, on one table, one server, the same streams.

    python -m benchmarks.bench_bigquery_reader [--rows 10000000] [--passes 5] [--slice-rows 20000]

Builds a table (int64, float64, int32 and string columns) in a temporary TableStore and serves it from a
child process (Storage Read over gRPC and the BigQuery REST API), then reads it:

  bare ReadRows       one thread per stream, grpcio's unary_stream parsing messages only: the limit
  bare ReadRows, kept the same, keeping every message's record batch bytes: the limit of a read that
                      returns every row at once (the memory must be touched, which costs page faults)
  bpj iter_batches    read_bigquery(...).iter_batches(), each batch dropped (like the bare loop's messages)
  bpj to_arrow        read_bigquery(...).to_arrow(), default workers and bytes in flight: keeps every row
  official to_arrow   google-cloud-bigquery's list_rows(table).to_arrow(bqstorage_client=...) with the official
                      BigQueryReadClient on an insecure channel to the same server
  official list_rows  google-cloud-bigquery's RowIterator over REST, 100 rows a page (what the official
                      iter_outputs gives), on the first --slice-rows rows only

Every Storage Read path creates its own session with the same max_stream_count, so all read the same
streams. Rates are the best of --passes (the first pass also fills the server's response cache). Then, in a
fresh interpreter, bpj reads the whole table batch by batch with max_bytes_in_flight a tenth of its size and
reports the growth of peak RSS against that bound. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import plot
from benchmarks.bench_storage_read import bare_read, build, cpu_seconds
from benchmarks.common import table

P, D, T = "bench", "ds", "wide"
URI = f"bq://{P}.{D}.{T}"


def serve(root: str, stream_rows: int) -> None:
    """Child process: serve the store, print the endpoints, run until stdin closes."""
    from bpj.local.bigquery.read_server import StorageReadServicer
    from bpj.local.bigquery.rest import serve_bigquery_rest
    from bpj.local.bigquery.store import TableStore
    from bpj.local.servers.serve import serve_grpc

    store = TableStore(Path(root))
    grpc_server = serve_grpc(StorageReadServicer(store, stream_rows=stream_rows))
    rest = serve_bigquery_rest(store)
    print(grpc_server.endpoint, rest.url, flush=True)
    sys.stdin.read()
    grpc_server.stop(None)
    rest.stop()


def bpj_iter(endpoint: str, streams: int) -> tuple[int, int]:
    from bpj import clients
    from bpj.outputs.bigquery import read_bigquery

    client = clients.bigquery_read(bigquery_storage_endpoint=endpoint)
    rows = nbytes = 0
    for batch in read_bigquery(URI, max_stream_count=streams, client=client, progress=False).iter_batches():
        rows += batch.num_rows
        nbytes += batch.nbytes
    return rows, nbytes


def bpj_read(endpoint: str, streams: int) -> tuple[int, int]:
    from bpj import clients
    from bpj.outputs.bigquery import read_bigquery

    client = clients.bigquery_read(bigquery_storage_endpoint=endpoint)
    arrow = read_bigquery(URI, max_stream_count=streams, client=client, progress=False).to_arrow()
    return arrow.num_rows, arrow.nbytes


def official_read(endpoint: str, url: str, streams: int) -> tuple[int, int]:
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    channel = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", -1)])
    storage = BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    client = bigquery.Client(
        project=P, credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )
    rows = client.list_rows(client.get_table(f"{P}.{D}.{T}"))
    batches = list(rows.to_arrow_iterable(bqstorage_client=storage, max_stream_count=streams))
    channel.close()
    return sum(b.num_rows for b in batches), sum(b.nbytes for b in batches)


def official_list_rows(url: str, limit: int) -> tuple[int, int]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=P, credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )
    n = 0
    for _ in client.list_rows(f"{P}.{D}.{T}", page_size=100, max_results=limit):
        n += 1
    return n, 0


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_probe(endpoint: str, bound: int) -> None:
    """Child process: read every batch and drop it; print the growth of peak RSS (bytes) as JSON."""
    from bpj import clients
    from bpj.outputs.bigquery import read_bigquery

    client = clients.bigquery_read(bigquery_storage_endpoint=endpoint)
    reader = read_bigquery(URI, client=client, max_bytes_in_flight=bound, progress=False)
    # One-time costs before the baseline: the session, the channel, and the code of a read (one batch).
    first = reader.iter_batches()
    next(first)
    first.close()
    # Reset the peak (VmHWM) to the current RSS, so the peak below is the peak of the read alone.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS") * 1024
    rows = nbytes = 0
    for batch in reader.iter_batches():
        rows += batch.num_rows
        nbytes += batch.nbytes
    peak = _status_kb("VmHWM") * 1024
    print(json.dumps({"rows": rows, "bytes": nbytes, "growth": peak - before}))


def picture_phase(
    name: str, bpj: str, others: list[str], rates: dict[str, float], passes: dict[str, list[float]]
) -> plot.Phase:
    """bpj's read and the reads it is compared with, in M rows/s (best pass), with bpj / it as the ratio."""
    sides = [
        plot.Side(label, rate=rates[label] / 1e6, ratio=rates[bpj] / rates[label], runs=passes[label])
        for label in [bpj, *others]
    ]
    return plot.Phase(name, sides, unit="M rows/s", ratio_means="bpj / it")


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--streams", type=int, default=4, help="max_stream_count of every session")
    parser.add_argument("--slice-rows", type=int, default=20_000, help="rows read by list_rows over REST")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--stream-rows", type=int, default=1_000_000, help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, help=argparse.SUPPRESS)
    plot.add_argument(parser)
    args = parser.parse_args()
    plot.check(args)
    if args.serve:
        serve(args.serve, args.stream_rows)
        return
    if args.memory:
        memory_probe(args.memory[0], int(args.memory[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        size = build(Path(tmp), args.rows)
        print(
            f"table: {args.rows:,} rows, {size / 1e6:.0f} MB on disk, built in {time.perf_counter() - t0:.1f} s; "
            f"{args.streams} streams"
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_bigquery_reader", "--serve", tmp],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            endpoint, url = child.stdout.readline().split()
            streams = args.streams
            runs = [
                ("bare ReadRows", lambda: bare_read(endpoint, streams), args.passes),
                ("bare ReadRows, kept", lambda: bare_read(endpoint, streams, keep=True), args.passes),
                ("bpj iter_batches", lambda: bpj_iter(endpoint, streams), args.passes),
                ("bpj to_arrow", lambda: bpj_read(endpoint, streams), args.passes),
                ("official to_arrow", lambda: official_read(endpoint, url, streams), args.passes),
                ("official list_rows", lambda: official_list_rows(url, args.slice_rows), 1),
            ]
            rates: dict[str, float] = {}
            per_pass: dict[str, list[float]] = {}
            results: list[tuple[str, ...]] = []
            # Interleaved passes: every path sees the same (warm) server and machine state.
            for n in range(args.passes):
                for label, fn, passes in runs:
                    if n >= passes:
                        continue
                    cpu0, t = cpu_seconds(child.pid), time.perf_counter()
                    rows, nbytes = fn()
                    elapsed = time.perf_counter() - t
                    server_cpu = cpu_seconds(child.pid) - cpu0
                    rates[label] = max(rates.get(label, 0.0), rows / elapsed)
                    per_pass.setdefault(label, []).append(rows / elapsed / 1e6)
                    results.append(
                        (
                            f"{label} #{n + 1}",
                            f"{rows:,}",
                            f"{elapsed:.2f}",
                            f"{rows / elapsed / 1e6:.3f}",
                            f"{nbytes / elapsed / 1e6:.0f}" if nbytes else "-",
                            f"{server_cpu / elapsed:.2f}",
                        )
                    )
            print(table(results, ("read", "rows", "seconds", "M rows/s", "MB/s", "server cores")))
            bpj = rates["bpj to_arrow"]
            print()
            print(
                table(
                    [
                        (
                            "bpj iter_batches / bare ReadRows",
                            f"{rates['bpj iter_batches'] / rates['bare ReadRows']:.2f}x",
                            ">= 0.9x",
                        ),
                        (
                            "bpj to_arrow / bare ReadRows, kept",
                            f"{bpj / rates['bare ReadRows, kept']:.2f}x",
                            ">= 0.9x",
                        ),
                        ("bpj to_arrow / bare ReadRows", f"{bpj / rates['bare ReadRows']:.2f}x", "-"),
                        (
                            "bpj to_arrow / official to_arrow",
                            f"{bpj / rates['official to_arrow']:.2f}x",
                            ">= 1.2x",
                        ),
                        (
                            "bpj to_arrow / official list_rows",
                            f"{bpj / rates['official list_rows']:.0f}x",
                            "-",
                        ),
                    ],
                    ("ratio (best pass each, rows/s)", "measured", "target"),
                )
            )
            plot.save(
                args,
                [
                    picture_phase(
                        "drop each batch: bpj iter_batches() vs a bare ReadRows loop",
                        "bpj iter_batches",
                        ["bare ReadRows"],
                        rates,
                        per_pass,
                    ),
                    picture_phase(
                        "keep every row: bpj to_arrow() vs a bare loop keeping its messages and the official paths",
                        "bpj to_arrow",
                        ["bare ReadRows, kept", "official to_arrow", "official list_rows"],
                        rates,
                        per_pass,
                    ),
                ],
                "bench_bigquery_reader: reading a table through Storage Read, bpj against the limit and the official clients",
                f"{args.rows:,} rows, {args.streams} streams; the best pass of {args.passes} (dots: every pass); "
                f"official list_rows: REST, the first {args.slice_rows:,} rows",
            )
            # Peak RSS growth = what the bound lets wait + gRPC's receive buffers of the streams open at
            # once (their number follows the bound too); a read with a 1 MiB bound (one stream) shows the
            # part that does not depend on the bound.
            print()
            for bound in (max(1 << 20, int(size) // 10), 1 << 20):
                probe = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.bench_bigquery_reader",
                        "--memory",
                        endpoint,
                        str(bound),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                mem = json.loads(probe.stdout.strip().splitlines()[-1])
                print(
                    f"memory: {mem['rows']:,} rows ({mem['bytes'] / 1e6:.0f} MB of Arrow) read batch by batch with "
                    f"max_bytes_in_flight={bound / 1e6:.1f} MB: peak RSS grew {mem['growth'] / 1e6:.1f} MB = "
                    f"{mem['growth'] / bound:.2f}x the bound"
                )
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)


if __name__ == "__main__":
    main()
