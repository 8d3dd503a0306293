"""Import cost, each measured in fresh interpreters: bpj against google-cloud-aiplatform.

    python -m benchmarks.bench_import [--repeat N]

Target (DESIGN.md): ``import bpj`` <= 50 ms and <= 40 MB peak RSS on a 2-core machine, loading neither
google.api_core nor grpc (bpj's errors become api_core's classes only once someone else imports api_core).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks import plot
from benchmarks.common import fresh, table

TARGET_MS = 50.0
TARGET_RSS_MB = 40.0
# What must stay out of a fresh interpreter after `import bpj` (and after making an API error).
HEAVY = ("google.api_core", "grpc", "google.protobuf")
MAKE_ERROR = "import bpj; bpj.errors.from_status(5, 'gone', rpc='JobService.GetBatchPredictionJob')"

CASES = [
    ("python (baseline)", "pass"),
    ("import bpj", "import bpj"),
    ("import bpj; make an ApiError", MAKE_ERROR),
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
    plot.add_argument(ap)
    args = ap.parse_args()
    plot.check(args)
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
    bpj_ms, bpj_mb = results["import bpj"]["seconds"] * 1000, results["import bpj"]["rss_mb"]
    verdict = "ok" if bpj_ms <= TARGET_MS and bpj_mb <= TARGET_RSS_MB else "MISSED"
    print(
        f"\nimport bpj: {bpj_ms:.1f} ms, {bpj_mb:.1f} MB (target <= {TARGET_MS:g} ms, <= {TARGET_RSS_MB:g} MB: "
        f"{verdict})"
    )
    for name, code in (("import bpj", "import bpj"), ("import bpj; make an ApiError", MAKE_ERROR)):
        found = loaded(code)
        print(f"{name}: loads {', '.join(found) or 'none'} of {', '.join(HEAVY)}")
    aiplatform_ms, aiplatform_mb = official["seconds"] * 1000, official["rss_mb"]
    plot.save(
        args,
        [
            plot.Phase(
                "import time",
                [
                    plot.Side(
                        name,
                        rate=r["seconds"] * 1000,
                        ratio=aiplatform_ms / (r["seconds"] * 1000),
                        runs=[t * 1000 for t in r["runs"]],
                    )
                    for name, r in results.items()
                ],
                unit="ms, median (lower is better)",
                ratio_means="aiplatform's / this",
            ),
            plot.Phase(
                "peak RSS",
                [
                    plot.Side(name, rate=r["rss_mb"], ratio=aiplatform_mb / r["rss_mb"])
                    for name, r in results.items()
                ],
                unit="MB, median (lower is better)",
                ratio_means="aiplatform's / this",
            ),
        ],
        "bench_import: the cost of an import in a fresh interpreter, bpj against google-cloud-aiplatform",
        f"{args.repeat} fresh interpreters each (dots: every run)",
    )


def loaded(code: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has loaded after running ``code``."""
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    modules = out.split()
    return [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in modules)]


if __name__ == "__main__":
    main()
