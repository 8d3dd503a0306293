"""The engine adapters on real engines: a Dask LocalCluster of worker processes and a local Ray read a
local-stack job's GCS and BigQuery outputs and get exactly the rows of ``reader.to_arrow()``; a corrupted
object fails through each; a partition that fails once is retried without duplicates; partitions carry no
secret; a missing engine names its extra; Beam's DirectRunner (in its own venv) reads the same rows."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from bpj import errors
from bpj.outputs import read_bigquery, read_gcs
from bpj.outputs.engines import read_piece
from bpj.outputs.reader import Reader
from tests.cluster.faults import FailingOnce

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]

BUCKET = "cluster-extra"
KINDS = ["gcs", "bigquery"]
SPLIT = 16 << 10  # the GCS job's one object (about 90 KB) in ranges of about this many bytes
# (output, max_bytes): the GCS output whole and split into ranges, the BigQuery output's streams
READS = [("gcs", None), ("gcs", SPLIT), ("bigquery", None)]


def reader_of(outputs, kind: str) -> Reader:
    return read_gcs(outputs.gcs) if kind == "gcs" else read_bigquery(outputs.bigquery)


def by_key(table: pa.Table) -> pa.Table:
    return table.sort_by("key")


def dask_rows(reader: Reader, *, retries: int = 0, **kwargs) -> pa.Table:
    frame = reader.to_dask(**kwargs).compute(retries=retries)
    return pa.Table.from_pandas(frame, preserve_index=False)


def ray_rows(ray, reader: Reader, **kwargs) -> pa.Table:
    refs = reader.to_ray(**kwargs).to_arrow_refs()
    return pa.concat_tables(ray.get(refs))


# -- the rows of to_arrow() -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "max_bytes"), READS)
def test_dask_gives_the_rows_and_dtypes_of_the_reader(kind, max_bytes, outputs, dask_client):
    reader = reader_of(outputs, kind)
    frame = reader.to_dask(max_bytes=max_bytes)
    parts = reader.partitions(max_bytes=max_bytes) if max_bytes else reader.partitions()
    assert frame.npartitions == len(parts) and (len(parts) > 4 or not max_bytes)
    expected = reader.to_pandas().sort_values("key", ignore_index=True)
    got = frame.compute().sort_values("key", ignore_index=True)
    assert len(got) == outputs.rows
    assert got.dtypes.equals(expected.dtypes) and frame.dtypes.equals(expected.dtypes)
    assert got.equals(expected)


@pytest.mark.parametrize(("kind", "max_bytes"), READS)
def test_ray_gives_the_rows_of_the_reader(kind, max_bytes, outputs, ray_local):
    reader = reader_of(outputs, kind)
    expected = by_key(reader.to_arrow())
    got = by_key(ray_rows(ray_local, reader, max_bytes=max_bytes))
    assert got.num_rows == outputs.rows
    assert got.schema.equals(expected.schema) and got.equals(expected)


# -- one schema from differing objects ----------------------------------------------------------------


def write_objects(stack, name: str, files: list[list[dict]]) -> str:
    stack.gcs.create_bucket(BUCKET, exists_ok=True)
    directory = f"gs://{BUCKET}/{name}/prediction-model-2026-12-02T00:00:00.000Z"
    for n, rows in enumerate(files, 1):
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        stack.gcs.write(f"{directory}/predictions_{n:04d}.jsonl", body)
    return directory


def test_objects_of_differing_schemas_conform_to_the_first(stack, dask_client, ray_local):
    fits = write_objects(
        stack,
        "fits",
        [
            [{"key": 1, "score": 0.5, "label": {"name": "a", "p": 0.25}, "note": "x"}],
            # an int score, a struct field and a column missing; an empty object; a null struct
            [{"key": 2, "score": 1, "label": {"name": "b"}}],
            [],
            [{"key": 3, "score": 2.5, "label": None, "note": None}],
        ],
    )
    reader = read_gcs(fits)
    expected = reader.to_pandas().sort_values("key", ignore_index=True)
    got = reader.to_dask().compute().sort_values("key", ignore_index=True)
    assert got.dtypes.equals(expected.dtypes) and got.equals(expected)
    assert by_key(ray_rows(ray_local, reader)).equals(by_key(reader.to_arrow()))

    wider = write_objects(
        stack, "wider", [[{"key": 1, "label": {"name": "a"}}], [{"key": 2, "label": {"name": "b", "p": 0.5}}]]
    )
    reader = read_gcs(wider)
    with pytest.raises(errors.InvalidArgument, match=r"predictions_0002\.jsonl.*label.*schema="):
        reader.to_dask().compute()
    with pytest.raises(errors.InvalidArgument, match=r"predictions_0002\.jsonl.*schema="):
        ray_rows(ray_local, reader)
    schema = reader.to_arrow().schema
    assert (
        reader.to_dask(schema=schema)
        .compute()
        .sort_values("key", ignore_index=True)
        .equals(reader.to_pandas().sort_values("key", ignore_index=True))
    )
    assert by_key(ray_rows(ray_local, reader, schema=schema)).equals(by_key(reader.to_arrow()))


def test_the_schema_sample_reads_the_head_of_a_large_object(stack, monkeypatch):
    from bpj.outputs import engines

    rows = [{"key": i, "late": i} if i >= 100 else {"key": i} for i in range(200)]
    reader = read_gcs(write_objects(stack, "head", [rows]))
    monkeypatch.setattr(engines, "SAMPLE_BYTES", 1000)  # about 80 of the first lines
    head = engines.sample(reader.partitions())
    assert head.column_names == ["key"] and 0 < head.num_rows < 100
    assert head.to_pylist() == rows[: head.num_rows]


def test_an_output_without_rows_is_an_empty_frame_and_dataset(stack, dask_client, ray_local):
    directory = write_objects(stack, "empty", [[], []])
    stack.gcs.write(f"{directory}/", b"")
    reader = read_gcs(directory)
    assert reader.to_arrow().num_rows == 0
    assert len(reader.to_dask().compute()) == 0
    assert reader.to_ray().count() == 0
    directory = write_objects(stack, "nothing", [])
    stack.gcs.write(f"{directory}/errors_0001.jsonl", b"")  # a directory without a prediction file
    nothing = read_gcs(directory)
    assert nothing.partitions() == []
    assert len(nothing.to_dask().compute()) == 0 and nothing.to_ray().count() == 0


# -- corruption ---------------------------------------------------------------------------------------


def corrupted_copy(stack, directory: str, name: str, how: str) -> tuple[str, str]:
    """The output's objects copied under ``name``, a digit near the middle of the first one changed where
    the local GCS keeps it on disk (its stored crc32c stays the original's): to another digit (``quiet``:
    the lines still parse) or to a control character (``breaks``: a line no longer parses). Returns
    (directory, corrupted uri)."""
    source = read_gcs(directory)
    stack.gcs.create_bucket(BUCKET, exists_ok=True)
    target = f"gs://{BUCKET}/{name}/prediction-model-2026-12-02T00:00:00.000Z"
    files = list(source.files())
    for uri, data in files:
        stack.gcs.write(f"{target}/{uri.rpartition('/')[2]}", data)
    first = f"{target}/{files[0][0].rpartition('/')[2]}"
    path = Path(stack.root, "gcs", BUCKET, first.removeprefix(f"gs://{BUCKET}/"))
    data = bytearray(path.read_bytes())
    at = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isdigit())
    data[at] ^= 0x01 if how == "quiet" else 0x20
    with open(path, "r+b") as f:  # in place: the object's stored metadata stays
        f.write(data)
    return target, first


@pytest.mark.parametrize(("max_bytes", "how"), [(None, "quiet"), (SPLIT, "quiet"), (SPLIT, "breaks")])
def test_a_corrupted_object_fails_each_adapter_with_no_rows(
    max_bytes, how, stack, outputs, dask_client, ray_local
):
    directory, corrupted = corrupted_copy(stack, outputs.gcs, f"corrupt-{max_bytes}-{how}", how)
    reader = read_gcs(directory)
    with pytest.raises(errors.DataCorruption, match="crc32c"):
        reader.to_arrow()
    pattern = rf"{corrupted}.*crc32c"
    with pytest.raises(errors.DataCorruption, match=pattern):
        read_gcs(directory).to_dask()  # the schema's sample (the whole object) is read here, and checked
    # With a schema given, nothing is read before the engine's workers read.
    schema = read_gcs(outputs.gcs).to_arrow().schema
    frame = None
    with pytest.raises(errors.DataCorruption, match=pattern):
        frame = reader.to_dask(schema=schema, max_bytes=max_bytes).compute()
    assert frame is None
    got = None
    with pytest.raises(errors.DataCorruption, match=pattern):
        got = ray_rows(ray_local, reader, schema=schema, max_bytes=max_bytes)
    assert got is None


# -- retries and idempotence --------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "max_bytes"), READS)
def test_a_partition_that_fails_once_is_retried_without_duplicates(
    kind, max_bytes, outputs, dask_client, ray_local, tmp_path
):
    reader = reader_of(outputs, kind)
    expected = by_key(reader.to_arrow())
    parts = reader.partitions(max_bytes=max_bytes) if max_bytes else reader.partitions()
    assert [read_piece(p) for p in parts] == [read_piece(p) for p in parts]  # idempotent

    (tmp_path / "dask").mkdir()
    failing = FailingOnce(reader, str(tmp_path / "dask"))
    # schema given: the sample would be the first read, in this process, which no engine retries
    assert by_key(dask_rows(failing, retries=1, schema=expected.schema, max_bytes=max_bytes)).equals(expected)
    assert failing.attempts() == [["first", "retry"]] * len(parts)

    (tmp_path / "ray").mkdir()
    failing = FailingOnce(reader, str(tmp_path / "ray"))
    assert by_key(ray_rows(ray_local, failing, schema=expected.schema, max_bytes=max_bytes)).equals(expected)
    assert failing.attempts() == [["first", "retry"]] * len(parts)


# -- what travels to a worker -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_partitions_and_graphs_carry_no_secret(kind, stack, outputs, dask_client, ray_local):
    import cloudpickle

    reader = reader_of(outputs, kind)
    parts = reader.partitions()
    # what names the first partition's data is in each pickle (so the pickles hold the partitions)
    name = (parts[0].object.name if kind == "gcs" else parts[0].stream).encode()
    token = stack.token.encode()
    pickled = pickle.dumps(parts)
    assert name in pickled and token not in pickled
    graph = cloudpickle.dumps(dict(reader.to_dask().__dask_graph__()))
    assert name in graph and token not in graph
    plan = cloudpickle.dumps(reader.to_ray())  # the dataset's plan: its datasource and read tasks
    assert name in plan and token not in plan
    # the workers read with the token all the same: it is in their environment, as the stack printed it
    assert set(dask_client.run(lambda: os.environ.get("BPJ_TOKEN")).values()) == {stack.token}


@pytest.mark.parametrize(
    ("module", "call", "message"),
    [
        ("dask", "to_dask()", "to_dask() needs dask: pip install 'bpj[dask]'"),
        ("ray", "to_ray()", "to_ray() needs ray: pip install 'bpj[ray]'"),
        ("apache_beam", "engines.to_beam(reader)", "to_beam() needs apache_beam: pip install 'apache-beam'"),
    ],
)
def test_a_missing_engine_names_its_extra(module, call, message):
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from bpj.outputs import engines, read_gcs\n"
        "reader = read_gcs('gs://bucket/dir', endpoint='http://127.0.0.1:9')\n"
        f"try:\n    {call if call.startswith('engines') else 'reader.' + call}\n"
        "except ModuleNotFoundError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == message, done.stderr


def test_max_bytes_splits_gcs_objects_only(outputs):
    with pytest.raises(errors.UsageError, match="max_stream_count"):
        read_bigquery(outputs.bigquery).to_dask(max_bytes=1 << 20)


# -- Beam (its own venv) --------------------------------------------------------------------------------


def beam(stack, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``beam_read.py`` run by the Beam venv's python with the stack's environment (and no other BPJ_)."""
    python = os.environ.get("BPJ_BEAM_PYTHON")
    if not python:
        pytest.skip("BPJ_BEAM_PYTHON is unset: `make beam-venv` builds the Beam venv and `make test` sets it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPJ_")}
    env.update(stack.env())
    script = ROOT / "tests" / "cluster" / "beam_read.py"
    return subprocess.run(
        [python, str(script), *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def test_beam_direct_runner_reads_the_rows_of_the_reader(stack, outputs, tmp_path):
    uris = {"gcs": outputs.gcs, "bigquery": outputs.bigquery}
    done = beam(
        stack, tmp_path, *(uris[kind] + (f"@{max_bytes}" if max_bytes else "") for kind, max_bytes in READS)
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for n, (kind, _) in enumerate(READS):
        lines = (tmp_path / f"{n}.jsonl").read_text().splitlines()
        got = sorted((json.loads(line) for line in lines), key=lambda r: r["key"])
        assert got == by_key(reader_of(outputs, kind).to_arrow()).to_pylist(), READS[n]


@pytest.mark.parametrize("max_bytes", [None, SPLIT])
def test_beam_fails_on_a_corrupted_object_with_no_rows(max_bytes, stack, outputs, tmp_path):
    directory, corrupted = corrupted_copy(stack, outputs.gcs, f"corrupt-beam-{max_bytes}", "quiet")
    done = beam(stack, "--in-process", tmp_path, directory + (f"@{max_bytes}" if max_bytes else ""))
    assert done.returncode != 0
    assert re.search(rf"DataCorruption.*{re.escape(corrupted)}.*crc32c", done.stderr), done.stderr[-4000:]
    assert not (tmp_path / "0.jsonl").exists()
