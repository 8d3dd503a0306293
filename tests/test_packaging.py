"""What a user installs: the wheel and the sdist build from this tree and hold what they must; the pytest
plugin loads by itself; a missing extra names itself; the testing example runs as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(kind: str, out: Path) -> Path:
    """Build with setuptools' PEP 517 hooks in a fresh interpreter (no network, no build isolation), from a
    copy of the files git tracks: nothing left over in this tree's build/ can slip in."""
    tree = out / "tree"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    hook = "build_wheel" if kind == "wheel" else "build_sdist"
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build("wheel", tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_the_package_its_data_and_its_entry_points(wheel):
    import bpj

    assert wheel.name.startswith(f"bpj-{bpj.__version__}-") and wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist = f"bpj-{bpj.__version__}.dist-info"
        metadata = z.read(f"{dist}/METADATA").decode()
        entry_points = z.read(f"{dist}/entry_points.txt").decode()
    console = [f"bpj/local/console/{f}" for f in ("console.html", "signin.html", "common.js", "console.css")]
    for needed in (
        "bpj/__init__.py",
        "bpj/py.typed",
        "bpj/_gen/descriptors.binpb",
        "bpj/_gen/types.pyi",
        *console,
    ):
        assert needed in names, needed
    assert any(n.startswith(f"{dist}/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/", "codegen/")) for n in names)
    assert "License-Expression: Apache-2.0" in metadata and "Classifier: Typing :: Typed" in metadata
    for extra in ("pandas", "testing", "local", "fast", "dask", "ray", "bench"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "pytest11" not in entry_points  # pytest would rewrite all of bpj in every run (see pyproject)
    assert "[console_scripts]\nbpj = bpj.cli:main" in entry_points


def test_the_sdist_holds_what_rebuilds_the_package(tmp_path):
    sdist = build("sdist", tmp_path)
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "bpj/_gen/descriptors.binpb",
        "bpj/py.typed",
        "bpj/local/console/jobs.js",
    ):
        assert needed in names, needed


def blocked(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``module`` cannot be imported (as when it is not installed)."""
    prelude = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_missing_extra_names_itself():
    done = blocked("hypothesis", "import bpj.testing.strategies")
    assert done.returncode == 1 and "pip install 'bpj[testing]'" in done.stderr
    # bpj itself and the fake need no extra.
    done = blocked("hypothesis", "import bpj\nfrom bpj.testing import fake_vertex\nwith fake_vertex(): pass")
    assert done.returncode == 0, done.stderr


def test_the_testing_example_passes_with_the_plugin_turned_on_as_documented():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_with_fake.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 passed" in done.stdout


FRESH = """
import bpj
from bpj.testing import fake_vertex

with fake_vertex() as fake:
    job = bpj.BatchPredictionJob.submit(
        job_display_name="fresh", model_name="1", gcs_source="gs://fresh-in/a.jsonl",
        gcs_destination_prefix="gs://fresh-out/run",
    )
    fake.finish(job.resource_name, bpj.types.JobState.JOB_STATE_SUCCEEDED, successful=3)
    assert job.wait().state.name == "JOB_STATE_SUCCEEDED"
try:
    import bpj.testing.strategies
except ModuleNotFoundError as e:
    assert "pip install 'bpj[testing]'" in str(e), e
else:
    raise AssertionError("hypothesis is not a dependency")
try:
    bpj.outputs.read_gcs("gs://fresh-out/run").to_pandas()
except ModuleNotFoundError as e:
    assert "pip install 'bpj[pandas]'" in str(e), e
else:
    raise AssertionError("pandas is not a dependency")
print("fresh ok")
"""


def test_a_fresh_venv_with_no_extras_runs_a_job_on_the_fake(wheel, tmp_path):
    # Installs the wheel's dependencies from the package index (or pip's cache).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(
        [str(python), "-c", FRESH], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "fresh ok", done.stderr[-3000:]
    done = subprocess.run(
        [str(venv / "bin" / "bpj"), "local", "example", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "pip install 'bpj[local]'" in done.stderr, done.stderr
