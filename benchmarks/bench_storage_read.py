"""Throughput of the local BigQuery Storage Read server, read three ways from a server in another process.

    python -m benchmarks.bench_storage_read [--rows 10000000] [--passes 2]

Builds a table (int64, float64, int32 and string columns) in a temporary TableStore, serves it from a child
process (Storage Read over gRPC and the REST API) and reads every stream of a session:

  bare ReadRows   one thread per stream, grpcio's unary_stream with the message class only: the limit
  official        google-cloud-bigquery's ``list_rows(table).to_arrow(bqstorage_client=...)`` with the
                  official BigQueryReadClient (its own thread pool, same server, same streams)

The very first pass also encodes the responses; the server caches them for every later session on the same
snapshot, so later passes show serving alone. The server's CPU share is read from /proc/<pid>/stat of the child. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import plot
from benchmarks.common import table

P, D, T = "bench", "ds", "wide"


def build(root: Path, rows: int) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from bpj.local.bigquery.store import TableStore

    store = TableStore(root)
    store.create_dataset(P, D)
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("k", pa.int32()), ("s", pa.string())])
    store.create_table(P, D, T, schema)
    step = 2_000_000
    for lo in range(0, rows, step):
        ids = np.arange(lo, min(rows, lo + step), dtype=np.int64)
        s = pc.binary_join_element_wise("row-", pa.array(ids).cast(pa.string()), "")
        store.append(
            P,
            D,
            T,
            pa.table({"id": ids, "x": ids * 0.5, "k": (ids % 1000).astype(np.int32), "s": s}, schema=schema),
        )
    return store.num_bytes(P, D, T)


def serve(root: str, response_mib: float) -> None:
    """Child process: serve the store, print the endpoints, run until stdin closes."""
    from bpj.local.bigquery.read_server import StorageReadServicer
    from bpj.local.bigquery.rest import serve_bigquery_rest
    from bpj.local.bigquery.store import TableStore
    from bpj.local.servers.serve import serve_grpc

    store = TableStore(Path(root))
    grpc_server = serve_grpc(StorageReadServicer(store, response_bytes=int(response_mib * (1 << 20))))
    rest = serve_bigquery_rest(store)
    print(grpc_server.endpoint, rest.url, flush=True)
    sys.stdin.read()
    grpc_server.stop(None)
    rest.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_read(endpoint: str, streams: int = 0, keep: bool = False) -> tuple[int, int]:
    """Every stream of a new session (``streams``: its max_stream_count, 0 = the server decides), one thread
    each, parsing messages only: the limit a reader is measured against. With ``keep``, each message's
    record batch bytes are kept until the end (the limit of a read that returns every row at once).
    Returns (rows, batch bytes)."""
    import grpc

    from bpj import types

    channel = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", -1)])
    create = channel.unary_unary(
        "/google.cloud.bigquery.storage.v1.BigQueryRead/CreateReadSession",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=types.ReadSession.FromString,
    )
    read = channel.unary_stream(
        "/google.cloud.bigquery.storage.v1.BigQueryRead/ReadRows",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=types.ReadRowsResponse.FromString,
    )
    session = create(
        types.CreateReadSessionRequest(
            parent=f"projects/{P}",
            read_session=types.ReadSession(
                table=f"projects/{P}/datasets/{D}/tables/{T}", data_format=types.DataFormat.ARROW
            ),
            max_stream_count=streams,
        )
    )
    totals = [[0, 0] for _ in session.streams]
    kept: list[list[bytes]] = [[] for _ in session.streams]

    def one(i: int, name: str) -> None:
        for r in read(types.ReadRowsRequest(read_stream=name)):
            totals[i][0] += r.row_count
            data = r.arrow_record_batch.serialized_record_batch
            totals[i][1] += len(data)
            if keep:
                kept[i].append(data)

    threads = [threading.Thread(target=one, args=(i, s.name)) for i, s in enumerate(session.streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def official_read(endpoint: str, url: str) -> tuple[int, int]:
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
    arrow = client.list_rows(client.get_table(f"{P}.{D}.{T}")).to_arrow(bqstorage_client=storage)
    channel.close()
    return arrow.num_rows, arrow.nbytes


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--response-mib", type=float, default=2.0, help="the server's response size")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    plot.add_argument(parser)
    args = parser.parse_args()
    plot.check(args)
    if args.serve:
        serve(args.serve, args.response_mib)
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        size = build(Path(tmp), args.rows)
        print(
            f"table: {args.rows:,} rows, {size / 1e6:.0f} MB on disk, built in {time.perf_counter() - t0:.1f} s"
        )
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_storage_read",
                "--serve",
                tmp,
                "--response-mib",
                str(args.response_mib),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            endpoint, url = child.stdout.readline().split()
            results: list[tuple[str, ...]] = []
            rates: dict[str, float] = {}
            per_pass: dict[str, list[float]] = {}
            runs = [
                ("bare ReadRows", lambda: bare_read(endpoint)),
                ("official to_arrow", lambda: official_read(endpoint, url)),
            ]
            for label, fn in runs:
                for n in range(args.passes):
                    cpu0, t = cpu_seconds(child.pid), time.perf_counter()
                    rows, nbytes = fn()
                    elapsed = time.perf_counter() - t
                    server_cpu = cpu_seconds(child.pid) - cpu0
                    name = f"{label} ({'first' if n == 0 else 'warm'})"
                    rates[name] = max(rates.get(name, 0.0), rows / elapsed)  # best of the passes
                    per_pass.setdefault(label, []).append(rows / elapsed / 1e6)
                    results.append(
                        (
                            name,
                            f"{rows:,}",
                            f"{elapsed:.2f}",
                            f"{rows / elapsed / 1e6:.2f}",
                            f"{nbytes / elapsed / 1e6:.0f}",
                            f"{server_cpu / elapsed:.2f}",
                        )
                    )
            print(table(results, ("read", "rows", "seconds", "M rows/s", "MB/s", "server cores")))
            bare = rates.get("bare ReadRows (warm)") or rates["bare ReadRows (first)"]
            official = rates.get("official to_arrow (warm)") or rates["official to_arrow (first)"]
            print(f"official to_arrow / bare ReadRows (best warm pass each): {official / bare:.2f}x")
            sides = [
                plot.Side("bare ReadRows", rate=bare / 1e6, ratio=1.0, runs=per_pass["bare ReadRows"]),
                plot.Side(
                    "official to_arrow",
                    rate=official / 1e6,
                    ratio=official / bare,
                    runs=per_pass["official to_arrow"],
                ),
            ]
            plot.save(
                args,
                [
                    plot.Phase(
                        "the server, read two ways", sides, unit="M rows/s", ratio_means="it / bare ReadRows"
                    )
                ],
                "bench_storage_read: the local Storage Read server itself",
                f"{args.rows:,} rows; the best warm pass of {args.passes} (dots: every pass, the first fills the cache)",
            )
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)


if __name__ == "__main__":
    main()
