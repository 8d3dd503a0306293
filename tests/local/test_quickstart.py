"""README's CLI quick start, run as written: the commands are read out of README.md (so the doc cannot drift
from what works) and run by bash, with the environment a user pastes from ``bpj local start`` (here: of the
module's stack), in an empty directory. The predictions must be the model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## CLI quick start", 1)[1]
    block = section.split("```\n", 2)[1]
    lines = block.splitlines()
    assert lines[0].startswith("bpj local start"), "the quick start begins by starting the stack"
    return lines[1:]


def test_the_cli_quick_start_gets_predictions(stack, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPJ_")}
    env.update(stack.env())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's `bpj`
    script = "set -euo pipefail\n" + "\n".join(quick_start_commands()) + "\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "SUCCEEDED  150" in out and out.count("JOB_STATE_SUCCEEDED") >= 2, out

    import joblib

    model = joblib.load(tmp_path / "iris" / "model.joblib")
    instances = [
        json.loads(line) for line in (tmp_path / "iris" / "instances.jsonl").read_text().splitlines()
    ]
    table = pq.read_table(tmp_path / "predictions.parquet").to_pylist()
    assert len(table) == len(instances) == 150
    expected = {tuple(x): int(p) for x, p in zip(instances, model.predict(instances), strict=True)}
    assert {tuple(r["instance"]): r["prediction"] for r in table} == expected
    assert "150 rows -> bq://" in out
