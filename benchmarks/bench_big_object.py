"""One large JSONL object read with a 64 MiB memory bound: bpj against what a user would write otherwise.

    python -m benchmarks.bench_big_object [--size 2G] [--bound 64M] [--repeat 1]

fake-gcs-server behind the local stack's guard (on disk in a temporary directory, as in the local stack)
holds one ``predictions.jsonl`` of ``--size`` bytes of prediction lines. Each reader runs in a fresh process
of its own, warmed up the same way before the clock starts (imports, the client, one small object read and
decoded), so each one's peak RSS growth is its own:

  bpj         ``read_gcs(uri, max_bytes_in_flight=bound).iter_batches()``: the object is streamed into a
              temporary file while its crc32c is computed, checked, then decoded slice by slice; the
              batches are counted and dropped, as a consumer that writes them on would
  official    google-cloud-storage: ``blob.download_to_filename(tmp)`` (its crc32c check on), then
              ``pyarrow.json.read_json(tmp)``: one table of every row

Prints throughput (object bytes / wall time), the ratio, and the peak RSS growth of each; never asserts.
Mind the server: fake-gcs-server grew to about 9 GB of RSS while taking in a 2 GB object here (a resumable
upload), so on a small machine measure with ``--size 512M``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_gcs_reader import make_object
from benchmarks.common import table

BUCKET = "bench-big"
NAME = "job/prediction-model-2026-01-01T00:00:00.000Z/predictions.jsonl"
SMALL = "warm/predictions.jsonl"
_MiB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def write_object(gcs, uri: str, size: int) -> int:
    """About ``size`` bytes of prediction lines, streamed into one object from 16 distinct 4 MiB blocks."""
    blocks = [make_object(seed, 4 * _MiB) for seed in range(16)]
    written = 0
    with gcs.writer(uri, content_type="application/jsonl") as w:
        k = 0
        while written < size:
            w.write(blocks[k % len(blocks)])
            written += len(blocks[k % len(blocks)])
            k += 1
    return written


_CHILD = """
import json, sys, time
endpoint, bucket, name, small, bound, mode = sys.argv[1:7]
bound = int(bound)

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

if mode == "bpj":
    from bpj.outputs import read_gcs

    def run(obj_name):
        uri = f"gs://{bucket}/{obj_name}"
        reader = read_gcs(uri, endpoint=endpoint, max_bytes_in_flight=bound, progress=False)
        return sum(b.num_rows for b in reader.iter_batches())
else:
    import tempfile
    import pyarrow.json as pj
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )

    def run(obj_name):
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
            client.bucket(bucket).blob(obj_name).download_to_filename(f.name, checksum="crc32c")
            return pj.read_json(f.name).num_rows

run(small)  # warm-up: imports, client, connection, the JSON reader and its memory pool
base = status("VmRSS:")
t = time.perf_counter()
rows = run(name)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": rows, "growth": status("VmHWM:") - base}))
"""


def measure(endpoint: str, mode: str, bound: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, endpoint, BUCKET, NAME, SMALL, str(bound), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="2G", help="the object's size: 2G, 512M, ... (default 2G)")
    ap.add_argument("--bound", default="64M", help="bpj's max_bytes_in_flight (default 64M)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, taking turns; the best is shown")
    args = ap.parse_args()

    from bpj.gcs import Gcs
    from bpj.local.gcs import GcsServer

    size, bound = parse_size(args.size), parse_size(args.bound)
    tmp = tempfile.TemporaryDirectory(prefix="bench-big-")
    server = GcsServer(Path(tmp.name))
    try:
        gcs = Gcs(server.endpoint)
        gcs.create_bucket(BUCKET)
        t = time.perf_counter()
        total = write_object(gcs, f"gs://{BUCKET}/{NAME}", size)
        gcs.write(f"gs://{BUCKET}/{SMALL}", make_object(99, _MiB))
        took = time.perf_counter() - t
        print(f"object: {total / 1e6:,.0f} MB written in {took:.0f} s; bound {bound / _MiB:g} MiB")
        best: dict[str, dict] = {}
        for _ in range(args.repeat):
            for mode in ("bpj", "official"):
                r = measure(server.endpoint, mode, bound)
                if mode not in best or r["seconds"] < best[mode]["seconds"]:
                    best[mode] = r
        b, o = best["bpj"], best["official"]
        assert b["rows"] == o["rows"], (b["rows"], o["rows"])
        mb = total / 1e6
        rows = [
            (
                "bpj iter_batches(), bound " + f"{bound / _MiB:g} MiB",
                f"{mb / b['seconds']:,.0f} MB/s",
                "1.00",
                f"{b['growth'] / _MiB:,.0f} MiB",
                f"{b['growth'] / bound:.2f}x bound",
            ),
            (
                "google-cloud-storage download_to_filename + pyarrow.json.read_json",
                f"{mb / o['seconds']:,.0f} MB/s",
                f"{o['seconds'] / b['seconds']:.2f}",
                f"{o['growth'] / _MiB:,.0f} MiB",
                f"{o['growth'] / bound:.2f}x bound",
            ),
        ]
        print(f"{b['rows']:,} rows; {args.size} object, best of {args.repeat}")
        print(table(rows, ("how", "rate", "ratio (bpj / it)", "peak RSS growth", "")))
    finally:
        server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
