"""Import cost, each measured in fresh interpreters: bpj against google-cloud-aiplatform.

    python -m benchmarks.bench_import [--repeat N]

Target (DESIGN.md): ``import bpj`` <= 50 ms and <= 40 MB peak RSS on a 2-core machine.
"""

from __future__ import annotations

import argparse

from benchmarks.common import fresh, table

CASES = [
    ("python (baseline)", "pass"),
    ("import bpj", "import bpj"),
    ("bpj: first message class", "import bpj; bpj.types.BatchPredictionJob"),
    (
        "bpj: gRPC JobService client ready",
        "import bpj; from bpj._gen.services.job_service import JobServiceClient; "
        "from bpj.transport.grpc import GrpcTransport; bpj.types.GetBatchPredictionJobRequest",
    ),
    ("from google.cloud import aiplatform", "from google.cloud import aiplatform"),
    (
        "google.cloud.aiplatform_v1 JobServiceClient",
        "from google.cloud.aiplatform_v1 import JobServiceClient",
    ),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    results = {name: fresh(code, args.repeat) for name, code in CASES}
    official = results["from google.cloud import aiplatform"]
    rows = [
        (
            name,
            f"{r['seconds'] * 1000:.1f}",
            f"{r['rss_mb']:.1f}",
            f"{official['seconds'] / r['seconds']:.1f}x" if r["seconds"] else "-",
        )
        for name, r in results.items()
    ]
    print(table(rows, ("case", "ms (median)", "peak RSS MB", "aiplatform / this")))


if __name__ == "__main__":
    main()
