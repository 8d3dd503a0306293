"""Benchmark pictures: ``bpj bench --plot`` against a real local stack writes a PNG of the expected size that is
not blank; the drawing never raises on any shape of data (hypothesis), the reservoir of samples stays bounded
and fair, and a missing matplotlib fails before any work with the extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bpj import config
from bpj.cli import main, plot
from tests.conftest import use_environment
from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def picture(path) -> tuple[int, int, float, int]:
    """(width, height, share of pixels that are not the background, distinct colours) of a PNG."""
    import numpy as np
    from matplotlib import image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    pixels = image.imread(str(path))[..., :3]
    height, width = pixels.shape[:2]
    flat = (pixels.reshape(-1, 3) * 255).round().astype(np.uint8)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = counts.max() / len(flat)
    return width, height, 1 - background, len(colours)


def expected_size(phases: list[plot.Phase]) -> tuple[int, int]:
    heights = [max(plot.ROW_INCHES, 0.9 + 0.32 * len(p.sides)) for p in phases or [plot.Phase("", [])]]
    return round(plot.WIDTH_INCHES * plot.DPI), round((plot.HEADER_INCHES + sum(heights)) * plot.DPI)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from bpj.local.stack import LocalStack

    x, y = load_iris(return_X_y=True)
    with LocalStack(tmp_path_factory.mktemp("plot-stack")) as s:
        s.gcs.create_bucket("plot-models")
        s.gcs.write(
            "gs://plot-models/iris/model.joblib", joblib_bytes(LogisticRegression(max_iter=500).fit(x, y))
        )
        yield s


@pytest.fixture
def env(stack, monkeypatch):
    use_environment(monkeypatch, stack.env())
    config.reset()
    yield
    config.reset()


def test_bench_plot_against_the_stack(env, capsys, tmp_path):
    upload = ["models", "upload", "--display-name", "iris", "--artifact-uri", "gs://plot-models/iris"]
    assert main([*upload, "--image", SKLEARN_IMAGE, "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["name"]
    out = tmp_path / "bench.png"
    argv = ["bench", "--model", model, "--gcs-prefix", "gs://plot-bench", "-n", "300", "--batch-size", "16"]
    assert main([*argv, "--plot", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    phases = report["phases"]
    # Every phase has its call times; the run polled at least once and the read got at least one batch.
    assert [p["calls"] >= 1 for p in phases] == [True] * 4
    assert all(p["median_call_seconds"] <= p["p99_call_seconds"] for p in phases)
    width, height, drawn, colours = picture(out)
    shown = [plot.Phase(p["phase"], [plot.Side("bpj")]) for p in phases]
    assert (width, height) == expected_size(shown)
    assert drawn > 0.03 and colours > 20


def side_strategy():
    seconds = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)
    return st.builds(
        plot.Side,
        label=st.text(
            st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_categories=("Cc", "Cs")), max_size=60
        ),
        rate=st.none() | seconds,
        seconds=st.none() | seconds,
        runs=st.lists(seconds, max_size=5),
        ratio=st.none() | st.floats(min_value=0, max_value=100),
        timeline=st.lists(st.tuples(seconds, seconds), max_size=30),
        latencies=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200),
    )


phases_strategy = st.lists(
    st.builds(
        plot.Phase,
        name=st.text(
            st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_categories=("Cc", "Cs")), max_size=30
        ),
        sides=st.lists(side_strategy(), max_size=3),
        unit=st.none() | st.sampled_from(["MB/s", "rows/s", "calls/s"]),
        ratio_means=st.sampled_from(["", "bpj / it"]),
    ),
    max_size=3,
)


@settings(max_examples=8, deadline=None)
@example([plot.Phase("one call", [plot.Side("bpj", rate=1.0, latencies=[0.25])], unit="MB/s")])
@example([plot.Phase("no timings", [plot.Side("bpj", seconds=0.5, latencies=[])])])
@example([])
@given(phases=phases_strategy)
def test_draw_never_raises_and_draws_something(tmp_path_factory, phases):
    path = tmp_path_factory.mktemp("draw") / "p.png"
    plot.draw(phases, str(path), title="synthetic", subtitle="hypothesis")
    width, height, drawn, colours = picture(path)
    assert (width, height) == expected_size(phases)
    assert drawn > 0.005 and colours > 2  # at least the title and the axes


@given(
    limit=st.integers(1, 50),
    width=st.integers(1, 3),
    n=st.integers(0, 300),
)
def test_samples_stay_bounded_and_keep_what_was_added(limit, width, n):
    kept = plot.Samples(limit, width=width)
    added = [tuple(float(i * width + k) for k in range(width)) for i in range(n)]
    for sample in added:
        kept.add(*sample)
    assert kept.seen == n and len(kept) == min(n, limit)
    rows = kept.rows()
    if n <= limit:
        assert rows == added
    assert set(rows) <= set(added) and len(set(rows)) == len(rows)


def test_missing_matplotlib_fails_before_any_work(tmp_path):
    out = tmp_path / "never.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from bpj.cli import main\n"
        f"sys.exit(main(['bench', '--model', 'iris', '--gcs-prefix', 'gs://b', '--plot', {str(out)!r}]))\n"
    )
    # An endpoint nothing listens on: reaching for it would fail with another message.
    environ = {
        **os.environ,
        "BPJ_API_ENDPOINT": "127.0.0.1:9",
        "BPJ_PROJECT": "p",
        "BPJ_LOCATION": "us-central1",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'bpj[bench]'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_benchmark_draws_its_sides(tmp_path):
    """bench_get against its own loopback servers: every client a bar with its ratio, every call's time a CDF."""
    out = tmp_path / "get.png"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_get", "--calls", "20", "--plot", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    width, height, drawn, colours = picture(out)
    assert width == round(plot.WIDTH_INCHES * plot.DPI) and height > 3 * plot.ROW_INCHES * plot.DPI
    assert drawn > 0.05 and colours > 20


def test_a_benchmark_without_matplotlib_stops_before_measuring(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        f"sys.argv = ['bench_get', '--plot', {str(tmp_path / 'p.png')!r}]\n"
        "from benchmarks import bench_get\n"
        "bench_get.plaintext_rows = None  # measuring would fail loudly\n"
        "bench_get.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "pip install 'bpj[bench]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_plot_into_a_missing_folder_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BPJ_API_ENDPOINT", "127.0.0.1:9")  # never reached: the check comes first
    out = tmp_path / "nowhere" / "bench.png"
    try:
        code = main(["bench", "--model", "iris", "--gcs-prefix", "gs://b", "--plot", str(out)])
    finally:
        config.reset()
    err = capsys.readouterr().err
    assert code == 2 and "--plot: no such folder" in err and len(err.strip().splitlines()) == 1


def test_samples_keep_a_uniform_subset():
    """Reservoir sampling: past the limit, every sample added is as likely to be kept, early or late."""
    kept = plot.Samples(200)
    n = 100_000
    for i in range(n):
        kept.add(float(i))
    values = sorted(kept)
    assert len(values) == 200 and kept.seen == n
    assert 0.4 * n < sum(values) / len(values) < 0.6 * n  # the first 200 alone would average 100
    assert sum(v >= n / 2 for v in values) > 60  # and late samples are kept too


@given(
    values=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
    q=st.sampled_from([0.01, 0.5, 0.9, 0.99, 1.0]),
)
def test_quantile_is_the_smallest_value_a_share_q_stays_under(values, q):
    ordered = sorted(values)
    x = plot.quantile(ordered, q)
    n = len(ordered)
    assert x in ordered
    assert sum(v <= x for v in ordered) >= q * n - 1e-9
    assert sum(v < x for v in ordered) < q * n
