"""The engine adapters on real engines: a Dask LocalCluster of worker processes and a local Ray read a
local-stack job's GCS and BigQuery outputs and get exactly the rows of ``reader.to_arrow()``; a corrupted
object fails through each; a partition that fails once is retried without duplicates; partitions carry no
secret; a missing engine names its extra; Beam's DirectRunner (in its own venv) reads the same rows."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from bpj import errors
from bpj.outputs import read_bigquery, read_gcs
from bpj.outputs.reader import Reader
from tests.cluster.faults import FailingOnce

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]

BUCKET = "cluster-extra"
KINDS = ["gcs", "bigquery"]


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


@pytest.mark.parametrize("kind", KINDS)
def test_dask_gives_the_rows_and_dtypes_of_the_reader(kind, outputs, dask_client):
    reader = reader_of(outputs, kind)
    frame = reader.to_dask()
    assert frame.npartitions == len(reader.partitions())
    expected = reader.to_pandas().sort_values("key", ignore_index=True)
    got = frame.compute().sort_values("key", ignore_index=True)
    assert len(got) == INSTANCES_EXPECTED
    assert got.dtypes.equals(expected.dtypes) and frame.dtypes.equals(expected.dtypes)
    assert got.equals(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_ray_gives_the_rows_of_the_reader(kind, outputs, ray_local):
    reader = reader_of(outputs, kind)
    expected = by_key(reader.to_arrow())
    got = by_key(ray_rows(ray_local, reader))
    assert got.num_rows == INSTANCES_EXPECTED
    assert got.schema.equals(expected.schema) and got.equals(expected)


INSTANCES_EXPECTED = 3000


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


# -- corruption ---------------------------------------------------------------------------------------


def corrupted_copy(stack, directory: str, name: str) -> tuple[str, str]:
    """The output's objects copied under ``name``, the middle byte of the first one flipped where the local
    GCS keeps it on disk (its stored crc32c stays the original's). Returns (directory, corrupted uri)."""
    source = read_gcs(directory)
    stack.gcs.create_bucket(BUCKET, exists_ok=True)
    target = f"gs://{BUCKET}/{name}/prediction-model-2026-12-02T00:00:00.000Z"
    files = list(source.files())
    for uri, data in files:
        stack.gcs.write(f"{target}/{uri.rpartition('/')[2]}", data)
    first = f"{target}/{files[0][0].rpartition('/')[2]}"
    path = Path(stack.root, "gcs", BUCKET, first.removeprefix(f"gs://{BUCKET}/"))
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
    return target, first


def test_a_corrupted_object_fails_each_adapter_with_no_rows(stack, outputs, dask_client, ray_local):
    directory, corrupted = corrupted_copy(stack, outputs.gcs, "corrupt")
    reader = read_gcs(directory)
    with pytest.raises(errors.DataCorruption, match="crc32c"):
        reader.to_arrow()
    pattern = rf"{corrupted}.*crc32c"
    with pytest.raises(errors.DataCorruption, match=pattern):
        reader.to_dask()  # the schema's sample is read here, and checked as well
    # With a schema given, nothing is read before the engine's workers read.
    schema = read_gcs(outputs.gcs).to_arrow().schema
    frame = None
    with pytest.raises(errors.DataCorruption, match=pattern):
        frame = reader.to_dask(schema=schema).compute()
    assert frame is None
    got = None
    with pytest.raises(errors.DataCorruption, match=pattern):
        got = ray_rows(ray_local, reader, schema=schema)
    assert got is None


# -- retries and idempotence --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_partition_that_fails_once_is_retried_without_duplicates(
    kind, outputs, dask_client, ray_local, tmp_path
):
    reader = reader_of(outputs, kind)
    expected = by_key(reader.to_arrow())
    assert reader.partitions()[0].read().equals(reader.partitions()[0].read())  # idempotent

    (tmp_path / "dask").mkdir()
    failing = FailingOnce(reader, str(tmp_path / "dask"))
    # schema given: the sample would be the first read, in this process, which no engine retries
    assert by_key(dask_rows(failing, retries=1, schema=expected.schema)).equals(expected)
    assert failing.attempts() == [["first", "retry"]] * len(reader.partitions())

    (tmp_path / "ray").mkdir()
    failing = FailingOnce(reader, str(tmp_path / "ray"))
    assert by_key(ray_rows(ray_local, failing, schema=expected.schema)).equals(expected)
    assert failing.attempts() == [["first", "retry"]] * len(reader.partitions())


# -- what travels to a worker -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_partitions_and_graphs_carry_no_secret(kind, stack, outputs, dask_client):
    import cloudpickle

    reader = reader_of(outputs, kind)
    assert stack.token.encode() not in pickle.dumps(reader.partitions())
    graph = dict(reader.to_dask().__dask_graph__())
    assert graph and stack.token.encode() not in cloudpickle.dumps(graph)
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


# -- Beam (its own venv) --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_beam_direct_runner_reads_the_rows_of_the_reader(kind, stack, outputs, tmp_path):
    python = os.environ.get("BPJ_BEAM_PYTHON")
    if not python:
        pytest.skip("BPJ_BEAM_PYTHON is unset: `make beam-venv` builds the Beam venv and `make test` sets it")
    reader = reader_of(outputs, kind)
    uri = outputs.gcs if kind == "gcs" else outputs.bigquery
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPJ_")}
    env.update(stack.env())
    out = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [python, str(ROOT / "tests" / "cluster" / "beam_read.py"), uri, str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    got = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["key"])
    assert got == by_key(reader.to_arrow()).to_pylist()
