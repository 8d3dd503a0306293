"""``bpj gcs mb|ls|cp`` and ``bpj bq load``: data in and out of Cloud Storage and BigQuery (the local stack's,
or Google's), so that a job has a model and instances to run on.

They use the endpoints of ``bpj.init`` (``BPJ_GCS_ENDPOINT``, ``BPJ_BIGQUERY_ENDPOINT``, ``BPJ_TOKEN``: what
``bpj local start`` prints) and check every argument before they connect.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpj import errors
from bpj.cli.common import add_json, print_json, require_reachable

CHUNK = 8 << 20  # bytes a streamed upload sends at a time
ROWS_PER_INSERT = 500  # rows per insertAll call of bq load


def _client() -> Any:
    from bpj import config
    from bpj.gcs import Gcs

    s = config.settings()
    require_reachable(s.gcs_endpoint, "Cloud Storage endpoint", "check BPJ_GCS_ENDPOINT")
    return Gcs(s.gcs_endpoint)


def _bucket_of(uri: str, flag: str) -> str:
    from bpj import rules

    rules.gcs(uri, flag, what="gs://bucket[/path]")
    return uri.removeprefix("gs://").split("/", 1)[0]


# -- mb, ls -------------------------------------------------------------------------------------------------


def make_bucket(args: argparse.Namespace) -> int:
    bucket = _bucket_of(args.bucket, "BUCKET")
    if args.bucket.rstrip("/") != f"gs://{bucket}":
        raise errors.UsageError(f"BUCKET: give a bucket alone (gs://{bucket}), got {args.bucket!r}")
    _client().create_bucket(bucket, exists_ok=True)
    print(f"gs://{bucket}")
    return 0


def list_objects(args: argparse.Namespace) -> int:
    _bucket_of(args.prefix, "PREFIX")
    bucket, _, prefix = args.prefix.removeprefix("gs://").partition("/")
    found = [(o.uri, o.size) for o in _client().objects(bucket, prefix)]
    if args.json:
        print_json([{"uri": u, "size": n} for u, n in found])
    else:
        for uri, size in found:
            print(f"{size:>12}  {uri}")
    return 0


# -- cp -----------------------------------------------------------------------------------------------------


def copy(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise errors.UsageError("cp takes SOURCE... DESTINATION: at least two paths")
    sources, destination = args.paths[:-1], args.paths[-1]
    remote = [s.startswith("gs://") for s in sources]
    if any(remote) and not all(remote):
        raise errors.UsageError("SOURCE: give local files or gs:// objects, not both")
    if all(remote) == destination.startswith("gs://"):
        raise errors.UsageError("cp copies between this machine and gs://: one side must be each")
    pairs = _downloads(sources, destination, args.recursive) if all(remote) else None
    uploads = None if pairs is not None else _uploads(sources, destination, args.recursive)
    gcs = _client()
    done: list[dict[str, Any]] = []
    if uploads is not None:
        for path, uri in uploads:
            with open(path, "rb") as f, gcs.writer(uri) as w:
                while data := f.read(CHUNK):
                    w.write(data)
            done.append({"from": str(path), "to": uri, "bytes": path.stat().st_size})
    else:
        assert pairs is not None
        for uri, path in _expand(gcs, pairs):
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")  # a broken or corrupt download never takes the name
            try:
                with gcs.open(uri) as src, open(partial, "wb") as dst:  # streamed: bounded memory, any size
                    shutil.copyfileobj(src, dst, CHUNK)
                partial.replace(path)
            finally:
                partial.unlink(missing_ok=True)
            done.append({"from": uri, "to": str(path), "bytes": path.stat().st_size})
    if args.json:
        print_json(done)
    else:
        for d in done:
            print(f"{d['from']} -> {d['to']} ({d['bytes']} bytes)")
    return 0


def _uploads(sources: list[str], destination: str, recursive: bool) -> list[tuple[Path, str]]:
    """(local file, gs:// object) pairs, every argument checked before any connection."""
    from bpj import gcs_uri

    _bucket_of(destination, "DESTINATION")
    into = destination.endswith("/") or len(sources) > 1 or recursive
    out: list[tuple[Path, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            if not recursive:
                raise errors.UsageError(f"SOURCE: {source} is a directory: add -r to copy what it holds")
            files = sorted(p for p in path.rglob("*") if p.is_file())
            out += [(f, _join(destination, f"{path.name}/{f.relative_to(path).as_posix()}")) for f in files]
        elif path.is_file():
            out.append((path, _join(destination, path.name) if into else destination))
        else:
            raise errors.UsageError(f"SOURCE: no such file: {source}")
    for _, uri in out:
        gcs_uri.split(uri)  # every object name valid before the first upload
    return out


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _downloads(sources: list[str], destination: str, recursive: bool) -> list[tuple[str, Path, bool]]:
    """(gs:// object or prefix, local target, whether the source is a prefix)."""
    target = Path(destination)
    into = destination.endswith(os.sep) or target.is_dir() or len(sources) > 1 or recursive
    out = []
    for source in sources:
        _bucket_of(source, "SOURCE")
        prefix = source.endswith("/") or recursive
        if prefix and not recursive:
            raise errors.UsageError(f"SOURCE: {source} is a prefix: add -r to copy the objects under it")
        name = source.rstrip("/").rsplit("/", 1)[-1]
        out.append((source, target / name if into and not prefix else target, prefix))
    return out


def _expand(gcs: Any, pairs: list[tuple[str, Path, bool]]) -> Iterator[tuple[str, Path]]:
    for source, target, prefix in pairs:
        if not prefix:
            yield source, target
            continue
        bucket, _, under = source.removeprefix("gs://").partition("/")
        under = under.rstrip("/") + "/" if under else ""
        found = list(gcs.objects(bucket, under))
        if not found:
            raise errors.UsageError(f"SOURCE: no object under {source}")
        for obj in found:
            rest = obj.name[len(under) :]
            if rest and not rest.endswith("/"):
                yield obj.uri, target / Path(*rest.split("/"))


# -- bq load ------------------------------------------------------------------------------------------------


def load(args: argparse.Namespace) -> int:
    """Append the rows of a local JSONL, CSV or Parquet file to a BigQuery table (made when missing)."""
    from bpj import bq_uri, config, rules

    rules.bq(args.table, "TABLE", table=True)
    names = bq_uri.parse(args.table)
    assert names is not None and names.dataset is not None and names.table is not None
    fmt = (args.format or Path(args.file).suffix.lstrip(".")).lower()
    fmt = "jsonl" if fmt in ("json", "ndjson") else fmt
    if fmt not in ("jsonl", "csv", "parquet"):
        raise errors.UsageError(
            f"FILE: cannot tell the format of {args.file!r}: use .jsonl, .csv or .parquet, or --format"
        )
    if not Path(args.file).is_file():
        raise errors.UsageError(f"FILE: no such file: {args.file}")
    table = _read_table(args.file, fmt)
    s = config.settings()
    require_reachable(s.bigquery_endpoint, "BigQuery endpoint", "check BPJ_BIGQUERY_ENDPOINT")
    client = _bigquery(s, names.project)
    written = _append(client, names.project, names.dataset, names.table, table)
    if args.json:
        print_json({"table": args.table, "rows": written})
    else:
        print(f"{written} rows -> {args.table}")
    return 0


def _read_table(path: str, fmt: str) -> Any:
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    try:
        if fmt == "jsonl":
            return pyarrow.json.read_json(path)
        if fmt == "csv":
            return pyarrow.csv.read_csv(path)
        return pyarrow.parquet.read_table(path)
    except Exception as e:  # noqa: BLE001 (pyarrow's errors for a bad file are many)
        raise errors.UsageError(f"FILE: {path} is not valid {fmt.upper()}: {e}") from None


def _bigquery(s: Any, project: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from bpj import config

    loopback = config.parse_endpoint(s.bigquery_endpoint).is_loopback
    credentials = AnonymousCredentials() if s.credentials is None and loopback else None
    if credentials is None:
        credentials = config.resolve_credentials(s, s.bigquery_endpoint)
    headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
    client = bigquery.Client(
        project=project, credentials=credentials, client_options={"api_endpoint": s.bigquery_endpoint}
    )
    if headers:
        client._http.headers.update(headers)
    return client


_ARROW_TO_BQ = {"int": "INTEGER", "uint": "INTEGER", "float": "FLOAT", "double": "FLOAT", "bool": "BOOLEAN"}


def _field(name: str, arrow_type: Any) -> Any:
    import pyarrow as pa
    from google.cloud import bigquery

    t = str(arrow_type)
    if pa.types.is_list(arrow_type):
        inner = _field(name, arrow_type.value_type)
        return bigquery.SchemaField(name, inner.field_type, mode="REPEATED", fields=inner.fields)
    if pa.types.is_struct(arrow_type):
        fields = [_field(f.name, f.type) for f in arrow_type]
        return bigquery.SchemaField(name, "RECORD", fields=fields)
    kind = next((v for k, v in _ARROW_TO_BQ.items() if t.startswith(k)), "STRING")
    if pa.types.is_timestamp(arrow_type):
        kind = "TIMESTAMP"
    return bigquery.SchemaField(name, kind)


def _append(client: Any, project: str, dataset: str, name: str, table: Any) -> int:
    from google.api_core import exceptions
    from google.cloud import bigquery

    client.create_dataset(bigquery.Dataset(f"{project}.{dataset}"), exists_ok=True)
    ref = f"{project}.{dataset}.{name}"
    try:
        client.get_table(ref)
    except exceptions.NotFound:
        schema = [_field(f.name, f.type) for f in table.schema]
        client.create_table(bigquery.Table(ref, schema=schema))
    rows = table.to_pylist()
    for start in range(0, len(rows), ROWS_PER_INSERT):
        problems = client.insert_rows_json(ref, rows[start : start + ROWS_PER_INSERT])
        if problems:
            raise errors.InvalidArgument(f"{ref}: rows refused from row {start}: {problems[:3]}")
    return len(rows)


# -- the parsers --------------------------------------------------------------------------------------------


def add_storage(sub: Any, parent: argparse.ArgumentParser) -> None:
    gcs = sub.add_parser("gcs", help="Cloud Storage: make a bucket, list, copy files in and out")
    gsub = gcs.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = gsub.add_parser("mb", parents=[parent], help="make a bucket (nothing happens if it exists)")
    p.add_argument("bucket", metavar="BUCKET", help="gs://bucket")
    p.set_defaults(run=make_bucket)
    p = gsub.add_parser("ls", parents=[parent], help="list the objects under a prefix")
    p.add_argument("prefix", metavar="PREFIX", help="gs://bucket[/prefix]")
    add_json(p)
    p.set_defaults(run=list_objects)
    p = gsub.add_parser(
        "cp",
        parents=[parent],
        help="copy files to gs:// or objects from it (a trailing / or several sources: into that directory)",
    )
    p.add_argument("paths", nargs="+", metavar="SOURCE... DESTINATION")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories and prefixes whole")
    add_json(p)
    p.set_defaults(run=copy)

    bq = sub.add_parser("bq", help="BigQuery: load a local file into a table")
    bsub = bq.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = bsub.add_parser(
        "load",
        parents=[parent],
        help="append a JSONL, CSV or Parquet file's rows to a table (made if missing)",
    )
    p.add_argument("table", metavar="TABLE", help="bq://project.dataset.table")
    p.add_argument("file", metavar="FILE", help="a .jsonl, .csv or .parquet file")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="override the extension")
    add_json(p)
    p.set_defaults(run=load)
