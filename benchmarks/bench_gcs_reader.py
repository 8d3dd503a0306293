"""GCS output reading, bpj against the plain limit and the official paths, side by side on the same data.

    python -m benchmarks.bench_gcs_reader [--objects 64] [--mib 4] [--repeat 3]

fake-gcs-server behind the local stack's guard (bpj.local.gcs.GcsServer, on disk in a temporary directory as
in the local stack) holds ``--objects`` objects of ``--mib`` MiB of JSONL prediction lines, and a bare
fake-gcs-server (no guard, on disk too) the same objects. Measured in this one run (best of ``--repeat``):

  guard   bpj ``files()`` through the guard      vs the same on the bare engine (what the guard costs)

  bytes   bpj ``files()`` (crc32c checked)      vs plain urllib3 GETs with 2 threads (the limit), and the same
          GETs with crc32c; vs google-cloud-storage transfer_manager.download_many with 8 threads; vs the
          official path (list_blobs, download_as_bytes, json.loads per line)
  arrow   bpj ``to_arrow()``                    vs pyarrow.json decoding the same bytes from memory with both
          cores (the best of: 2 threads with one file each, or pyarrow's own threads per file); and vs 2
          threads that each GET, check and decode (what fetching costs here, where the server shares the
          two cores with the reader)
  memory  peak RSS growth of a fresh process reading an output 10x ``max_bytes_in_flight`` (files() and
          iter_batches()), against that bound

Prints a table with ratios; never asserts.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import plot
from benchmarks.common import table

BUCKET = "bench-out"
PREFIX = "job/prediction-model-2026-01-01T00:00:00.000Z"
_MiB = 1 << 20


def make_object(seed: int, size: int) -> bytes:
    rnd = random.Random(seed)
    lines, n, i = [], 0, 0
    while n < size:
        line = json.dumps(
            {
                "instance": {
                    "id": seed * 1_000_000 + i,
                    "features": [rnd.random() for _ in range(4)],
                    "text": "naïve",
                },
                "prediction": {"scores": [rnd.random() for _ in range(3)], "label": f"class_{i % 3}"},
            }
        )
        lines.append(line)
        n += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


def best_interleaved(
    fns: dict[str, object], repeat: int, runs: dict[str, list[float]] | None = None
) -> dict[str, tuple[float, object]]:
    """Best time of each function, the functions taking turns (so a change of load hits them all); every
    run's time appended to ``runs[name]``."""
    out: dict[str, tuple[float, object]] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t, value = best(fn, 1, None if runs is None else runs.setdefault(name, []))
            if name not in out or t < out[name][0]:
                out[name] = (t, value)
    return out


def best(fn, repeat: int, runs: list[float] | None = None) -> tuple[float, object]:
    """The best time of ``repeat`` runs and the last value; every run's time appended to ``runs``."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    if runs is not None:
        runs.extend(times)
    return min(times), out


def plain_get(endpoint: str, names: list[str], crc: bool, decode: bool = False) -> int:
    """2 threads of urllib3 GETs reading each body in one piece: the download limit. With ``decode``, each
    thread also decodes what it got with pyarrow.json (the fetch-and-decode limit when the server shares the
    cores); returns rows then, else bytes."""
    import google_crc32c
    import urllib3

    pool = urllib3.PoolManager(maxsize=2)
    total = [0, 0]

    def run(k: int) -> None:
        for name in names[k::2]:
            url = f"{endpoint}/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media"
            data = pool.request("GET", url).data
            if crc:
                google_crc32c.value(data)
            total[k] += decode_one(data) if decode else len(data)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total)


def official_client(endpoint: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )


def transfer_manager(endpoint: str, names: list[str]) -> int:
    from google.cloud.storage import transfer_manager

    client = official_client(endpoint)
    bucket = client.bucket(BUCKET)
    pairs = [(bucket.blob(n), io.BytesIO()) for n in names]
    transfer_manager.download_many(pairs, max_workers=8, worker_type="thread", raise_exception=True)
    return sum(len(f.getvalue()) for _, f in pairs)


def official_path(endpoint: str) -> int:
    """What the official SDK offers: a listing of blobs; download each, parse each line."""
    client = official_client(endpoint)
    rows = 0
    for blob in client.list_blobs(BUCKET, prefix=PREFIX + "/"):
        if blob.name.rpartition("/")[2].startswith("predictions_"):
            for line in blob.download_as_bytes().splitlines():
                json.loads(line)
                rows += 1
    return rows


def decode_one(data: bytes) -> int:
    import pyarrow as pa
    import pyarrow.json as pj

    opts = pj.ReadOptions(use_threads=False, block_size=len(data) + 1)
    return pj.read_json(pa.BufferReader(data), read_options=opts).num_rows


def decode_limit(blobs: list[bytes]) -> int:
    with ThreadPoolExecutor(2) as ex:
        return sum(ex.map(decode_one, blobs))


def decode_limit_pyarrow_threads(blobs: list[bytes]) -> int:
    import pyarrow as pa
    import pyarrow.json as pj

    return sum(pj.read_json(pa.BufferReader(d)).num_rows for d in blobs)


_MEMORY_CHILD = """
import json, resource, sys
from bpj.outputs import read_gcs
endpoint, uri, budget, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
r = read_gcs(uri, endpoint=endpoint, max_bytes_in_flight=budget, progress=False)
r.objects()
if mode == "batches":  # one-time costs first: pyarrow's JSON reader and its memory pool, on one tiny file
    from bpj.gcs import GcsObject
    from bpj.outputs.gcs import decode
    decode(GcsObject("b", "x.jsonl", 9), b'{"a": 1}\\n')
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = rss()
n = 0
if mode == "files":
    for _, data in r.files():
        n += len(data)
else:
    for b in r.iter_batches():
        n += b.num_rows
with open("/proc/self/status") as f:  # VmHWM: this process's peak (ru_maxrss can carry the parent's)
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
print(json.dumps({"base": base, "peak": peak, "n": n}))
"""


def memory(endpoint: str, uri: str, budget: int, mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, endpoint, uri, str(budget), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (r["peak"] - r["base"]) / _MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--mib", type=float, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    plot.add_argument(ap)
    args = ap.parse_args()
    plot.check(args)

    from bpj.gcs import Gcs
    from bpj.local.gcs import GcsServer
    from bpj.outputs import read_gcs

    tmp = tempfile.TemporaryDirectory(prefix="bench-gcs-")
    server = GcsServer(Path(tmp.name) / "guarded")
    bare = GcsServer(Path(tmp.name) / "bare", guarded=False)
    try:
        gcs = Gcs(server.endpoint)
        bare_gcs = Gcs(bare.endpoint)
        size = int(args.mib * _MiB)
        names = []
        for client in (gcs, bare_gcs):
            client.create_bucket(BUCKET)
        with ThreadPoolExecutor(2) as ex:
            for i, data in enumerate(ex.map(lambda s: make_object(s, size), range(args.objects))):
                name = f"{PREFIX}/predictions_{i + 1:05d}-of-{args.objects:05d}.jsonl"
                for client in (gcs, bare_gcs):
                    client.write(f"gs://{BUCKET}/{name}", data, content_type="application/jsonl")
                names.append(name)
        for client in (gcs, bare_gcs):
            client.write(f"gs://{BUCKET}/{PREFIX}/", b"")
        uri = f"gs://{BUCKET}/{PREFIX}"
        total = sum(gcs.size(f"gs://{BUCKET}/{n}") for n in names)
        ep = server.endpoint
        reader = read_gcs(uri, endpoint=ep, max_workers=args.workers, progress=False)
        reader.objects()
        mb = total / 1e6
        rep = args.repeat

        bare_reader = read_gcs(uri, endpoint=bare.endpoint, max_workers=args.workers, progress=False)
        bare_reader.objects()
        rows: list[tuple[str, ...]] = []
        phases: dict[str, plot.Phase] = {}
        runs: dict[str, list[float]] = {}

        def add(what: str, how: str, t: float, t_bpj: float, target: str = "", key: str = "") -> None:
            """One row of the table and one side of the picture: ``how`` read the output in ``t`` seconds
            (its best run), bpj in ``t_bpj``."""
            rows.append((what, how, f"{mb / t:,.0f} MB/s", f"{t / t_bpj:.2f}", target))
            rates = [mb / r for r in runs.get(key, [])]
            side = plot.Side(how, rate=mb / t, ratio=t / t_bpj, runs=rates)
            phases.setdefault(what, plot.Phase(what, [], unit="MB/s", ratio_means="bpj / it")).sides.append(
                side
            )

        guard = best_interleaved(
            {
                "guarded": lambda: sum(len(d) for _, d in reader.files()),
                "bare": lambda: sum(len(d) for _, d in bare_reader.files()),
            },
            2 * rep + 1,
            runs,
        )
        (t_guarded, got), (t_bare, got_bare) = guard["guarded"], guard["bare"]
        assert got == got_bare == total
        add("guard", "bpj files() through the guard", t_guarded, t_guarded, key="guarded")
        add("guard", "bpj files() on the bare engine", t_bare, t_guarded, ">= 0.9", "bare")
        times = best_interleaved(
            {
                "bpj": lambda: sum(len(d) for _, d in reader.files()),
                "plain": lambda: plain_get(ep, names, crc=False),
                "plain_crc": lambda: plain_get(ep, names, crc=True),
            },
            2 * rep + 1,
            runs,
        )
        (t_bpj, got), (t_plain, _), (t_plain_crc, _) = times["bpj"], times["plain"], times["plain_crc"]
        assert got == total
        t_tm, got = best(lambda: transfer_manager(ep, names), 1)
        assert got == total
        t_off, nrows = best(lambda: official_path(ep), 1)
        add("bytes", "bpj files() (crc32c on)", t_bpj, t_bpj, key="bpj")
        add("bytes", "plain urllib3 GET x2 threads", t_plain, t_bpj, ">= 0.8", "plain")
        add("bytes", "plain urllib3 GET x2 + crc32c", t_plain_crc, t_bpj, key="plain_crc")
        add("bytes", "transfer_manager x8 threads", t_tm, t_bpj, ">= 10")
        add("bytes", "official: list, download, json.loads", t_off, t_bpj)

        blobs = [gcs.read(f"gs://{BUCKET}/{n}") for n in names]
        t_arrow, tbl = best(lambda: reader.to_arrow(), rep, runs.setdefault("arrow", []))
        t_dec, n2 = best(lambda: decode_limit(blobs), rep, runs.setdefault("dec", []))
        t_dec_pa, _ = best(lambda: decode_limit_pyarrow_threads(blobs), rep, runs.setdefault("dec_pa", []))
        assert tbl.num_rows == n2 == nrows  # type: ignore[attr-defined]
        t_limit = min(t_dec, t_dec_pa)
        t_fetch_dec, n3 = best(
            lambda: plain_get(ep, names, crc=True, decode=True), rep, runs.setdefault("fetch_dec", [])
        )
        assert n3 == nrows
        add("arrow", "bpj to_arrow()", t_arrow, t_arrow, key="arrow")
        add("arrow", "pyarrow.json in memory, 2 threads", t_dec, t_arrow, key="dec")
        add("arrow", "pyarrow.json in memory, its threads", t_dec_pa, t_arrow, key="dec_pa")
        rows.append(
            (
                "arrow",
                "decode limit (best of the two)",
                f"{mb / t_limit:,.0f} MB/s",
                f"{t_limit / t_arrow:.2f}",
                ">= 0.85",
            )
        )
        add("arrow", "plain GET + crc32c + pyarrow.json x2", t_fetch_dec, t_arrow, key="fetch_dec")
        blobs.clear()

        budget = total // 10
        memory_phase = plot.Phase(
            f"memory: peak RSS growth reading {total / _MiB:.0f} MiB, bound {budget / _MiB:.1f} MiB",
            [],
            unit="MiB (lower is better)",
            ratio_means="x the bound",
        )
        for mode in ("files", "batches"):
            growth = min(memory(ep, uri, budget, mode) for _ in range(2))
            rows.append(
                (
                    "memory",
                    f"peak RSS growth, {mode}, output {total / _MiB:.0f} MiB",
                    f"{growth:,.0f} MiB",
                    f"{growth / (budget / _MiB):.2f}x bound",
                    "<= ~2x",
                )
            )
            how = "files()" if mode == "files" else "iter_batches()"
            memory_phase.sides.append(plot.Side(f"bpj {how}", rate=growth, ratio=growth / (budget / _MiB)))
        from bpj import checksum

        print(
            f"{args.objects} objects x {args.mib:g} MiB = {mb:,.0f} MB, {nrows:,} rows; bound {budget / _MiB:.1f} MiB; "
            f"bpj checks crc32c with {checksum.implementation()}, the plain GETs with google-crc32c"
        )
        print(table(rows, ("what", "how", "rate", "ratio (bpj / it)", "target")))
        titles = {
            "guard": "guard: bpj files() through the local stack's guard vs the bare engine",
            "bytes": "bytes: bpj files() (crc32c checked) vs plain GETs and the official paths",
            "arrow": "arrow: bpj to_arrow() vs pyarrow.json on the same bytes",
        }
        for key, phase in phases.items():
            phase.name = titles[key]
        plot.save(
            args,
            [*phases.values(), memory_phase],
            "bench_gcs_reader: reading a job's GCS outputs, bpj against the limit and the official paths",
            f"{args.objects} objects x {args.mib:g} MiB = {mb:,.0f} MB of JSONL; the best run of each (dots: every run)",
        )
    finally:
        server.stop()
        bare.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
