"""The local table store: BigQuery datasets and tables as Arrow IPC files on disk.

    root/<project>/<dataset>/.dataset                       marker, written once (its mtime is the creation time)
    root/<project>/<dataset>/<table>/schema.arrow           the table's Arrow schema (an IPC schema message)
    root/<project>/<dataset>/<table>/part-<seq>-<rows>.arrow  one Arrow IPC file per append, never rewritten

Why Arrow files and not DuckDB (or SQLite): DuckDB 2.x autoloads extensions from the network and fails offline,
and Arrow record batches are exactly what the Storage Read API serves, so a read is a memory map and a slice.

Every append writes a new part to a temporary name, fsyncs it, renames it into place and fsyncs the directory:
a crash leaves either the whole part or none of it. Tables and datasets appear and disappear with one rename,
too. One ``TableStore`` is shared by the Storage Read server, the REST API and the executor in one process;
its methods are thread-safe, and a reader works on a snapshot (the parts that existed when it started).

Every public method refuses (InvalidArgument) a project, dataset or table name that is not a valid BigQuery
name (``project_problem``, ``dataset_problem``, ``table_problem``), so each name is one plain path component
under root and none reaches outside it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bpj import errors

if TYPE_CHECKING:
    import pyarrow as pa

# BigQuery's naming rules (the "Naming" sections of the datasets, tables and projects docs), so that every
# name is one plain path component under root. Project ids: a letter, then lowercase letters, digits and
# hyphens, not ending in a hyphen, at most 30 characters, maybe after a "domain.tld:" prefix. (Google asks for
# at least 6 characters of new projects; short ids such as "p" stay accepted here, as tests and fakes use them.)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PROJECT = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})+:)?[a-z](?:[a-z0-9-]{{0,28}}[a-z0-9])?")
_DATASET = re.compile(r"[A-Za-z0-9_]+")
# Tables: Unicode letters (L), marks (M), numbers (N), connectors such as "_" (Pc), dashes (Pd), spaces (Zs).
_TABLE_CATEGORIES = frozenset({"L", "M", "N", "Pc", "Pd", "Zs"})
_PART = re.compile(r"part-(\d{9})-(\d+)\.arrow")
# BigQuery allows 1024 characters (tables: UTF-8 bytes); most filesystems take 255 bytes per path component.
_MAX_NAME = 255


class Part(NamedTuple):
    """One immutable part file of a table: its path, rows and size in bytes."""

    path: Path
    num_rows: int
    num_bytes: int


class TableStore:
    """Datasets and tables under ``root`` (created when missing). Thread-safe; see the module docstring."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # (project, dataset, table) -> parts in row order, and schemas; filled on first use of a table.
        self._parts: dict[tuple[str, str, str], list[Part]] = {}
        self._schemas: dict[tuple[str, str, str], pa.Schema] = {}

    def __repr__(self) -> str:
        return f"TableStore({str(self.root)!r})"

    # -- datasets ----------------------------------------------------------------------------------

    def create_dataset(self, project: str, dataset: str, *, exists_ok: bool = False) -> None:
        """Creates an empty dataset; AlreadyExists unless ``exists_ok``."""
        path = self._dataset_dir(project, dataset)
        with self._lock:
            if path.is_dir():
                if exists_ok:
                    return
                raise errors.AlreadyExists(f"Already Exists: Dataset {project}:{dataset}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            (tmp / ".dataset").touch()
            _fsync_dir(tmp)
            os.rename(tmp, path)
            _fsync_dir(path.parent)

    def dataset_exists(self, project: str, dataset: str) -> bool:
        return self._dataset_dir(project, dataset).is_dir()

    def list_datasets(self, project: str) -> list[str]:
        """Dataset ids of ``project``, sorted; a project nobody wrote to has none."""
        _check_project(project)
        return _children(_join(self.root, project))

    def dataset_created(self, project: str, dataset: str) -> float:
        """When the dataset was created (seconds since the epoch)."""
        path = self._existing_dataset(project, dataset)
        try:
            return (path / ".dataset").stat().st_mtime
        except FileNotFoundError:
            raise _dataset_not_found(project, dataset) from None

    def delete_dataset(self, project: str, dataset: str, *, delete_contents: bool = False) -> None:
        """Deletes a dataset; one that still holds tables only with ``delete_contents``."""
        with self._lock:
            path = self._existing_dataset(project, dataset)
            if _children(path) and not delete_contents:
                raise errors.FailedPrecondition(f"Dataset {project}:{dataset} is still in use")
            for key in [k for k in self._parts if k[:2] == (project, dataset)]:
                self._forget(key)
            _remove_dir(path)

    # -- tables ------------------------------------------------------------------------------------

    def create_table(
        self, project: str, dataset: str, table: str, schema: pa.Schema, *, exists_ok: bool = False
    ) -> None:
        """Creates an empty table with ``schema``; AlreadyExists unless ``exists_ok`` (the schema is kept)."""
        import pyarrow as pa

        path = self._table_dir(project, dataset, table)
        if not isinstance(schema, pa.Schema):
            raise errors.InvalidArgument(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
        seen: set[str] = set()
        for name in schema.names:
            if not name:
                raise errors.InvalidArgument("Empty column name in the schema")
            if name.lower() in seen:
                raise errors.InvalidArgument(f"Duplicate column names in the schema: {name}")
            seen.add(name.lower())
        with self._lock:
            self._existing_dataset(project, dataset)
            if path.is_dir():
                if exists_ok:
                    return
                raise errors.AlreadyExists(f"Already Exists: Table {project}:{dataset}.{table}")
            tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            _write_durably(tmp / "schema.arrow", schema.serialize().to_pybytes())
            _fsync_dir(tmp)
            os.rename(tmp, path)
            _fsync_dir(path.parent)
            key = (project, dataset, table)
            self._schemas[key] = schema
            self._parts[key] = []

    def table_exists(self, project: str, dataset: str, table: str) -> bool:
        return self._table_dir(project, dataset, table).is_dir()

    def list_tables(self, project: str, dataset: str) -> list[str]:
        """Table ids of a dataset, sorted."""
        return _children(self._existing_dataset(project, dataset))

    def table_created(self, project: str, dataset: str, table: str) -> float:
        """When the table was created (seconds since the epoch)."""
        try:
            return (self._existing_table(project, dataset, table) / "schema.arrow").stat().st_mtime
        except FileNotFoundError:
            raise _table_not_found(project, dataset, table) from None

    def schema(self, project: str, dataset: str, table: str) -> pa.Schema:
        return self._load(project, dataset, table)[0]

    def delete_table(self, project: str, dataset: str, table: str) -> None:
        with self._lock:
            path = self._existing_table(project, dataset, table)
            self._forget((project, dataset, table))
            _remove_dir(path)

    # -- rows ----------------------------------------------------------------------------------------

    def append(self, project: str, dataset: str, table: str, data: pa.Table | pa.RecordBatch) -> Part | None:
        """Appends rows, durably and atomically (all or nothing), cast to the table's schema.

        Columns are matched by name; a missing nullable column is filled with nulls. A column that cannot be
        cast, a null in a REQUIRED column or a column the table lacks is InvalidArgument naming the column.
        Returns the new part (None when ``data`` has no rows).
        """
        import pyarrow as pa

        schema, _ = self._load(project, dataset, table)
        rows = cast_to_schema(data, schema)
        if rows.num_rows == 0:
            return None
        path = self._table_dir(project, dataset, table)
        tmp = path / f".tmp-{uuid.uuid4().hex}.arrow"
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                writer.write_table(rows)
            _fsync_file(tmp)
        except FileNotFoundError:
            raise _table_not_found(project, dataset, table) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            try:
                _, parts = self._load(project, dataset, table)
            except errors.NotFound:
                tmp.unlink(missing_ok=True)
                raise
            seq = _seq(parts[-1].path) + 1 if parts else 0
            final = path / f"part-{seq:09d}-{rows.num_rows}.arrow"
            os.rename(tmp, final)
            _fsync_dir(path)
            part = Part(final, rows.num_rows, final.stat().st_size)
            parts.append(part)
            return part

    def num_rows(self, project: str, dataset: str, table: str) -> int:
        return sum(p.num_rows for p in self.parts(project, dataset, table))

    def num_bytes(self, project: str, dataset: str, table: str) -> int:
        return sum(p.num_bytes for p in self.parts(project, dataset, table))

    def parts(self, project: str, dataset: str, table: str) -> list[Part]:
        """The table's parts in row order (a snapshot: later appends add parts, never change these)."""
        with self._lock:
            return list(self._load(project, dataset, table)[1])

    def scan(
        self, project: str, dataset: str, table: str, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The table's record batches in row order, with only ``columns`` (in that order) when given."""
        schema, parts = self._snapshot(project, dataset, table)
        check_columns(schema, columns)
        return _scan(parts, columns, (project, dataset, table))

    def read(
        self,
        project: str,
        dataset: str,
        table: str,
        columns: Sequence[str] | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> pa.Table:
        """Rows ``[start, stop)`` of the table as one Arrow table (memory-mapped where it can be)."""
        schema, parts = self._snapshot(project, dataset, table)
        return read_parts(parts, schema, columns, start, stop)

    # -- internals -----------------------------------------------------------------------------------

    def _snapshot(self, project: str, dataset: str, table: str) -> tuple[pa.Schema, list[Part]]:
        with self._lock:
            schema, parts = self._load(project, dataset, table)
            return schema, list(parts)

    def _load(self, project: str, dataset: str, table: str) -> tuple[pa.Schema, list[Part]]:
        import pyarrow as pa

        key = (project, dataset, table)
        with self._lock:
            path = self._existing_table(project, dataset, table)
            if key not in self._schemas:
                schema = pa.ipc.read_schema(pa.py_buffer((path / "schema.arrow").read_bytes()))
                parts = []
                for entry in sorted(path.iterdir()):
                    m = _PART.fullmatch(entry.name)
                    if m:
                        parts.append(Part(entry, int(m.group(2)), entry.stat().st_size))
                    elif entry.name.startswith(".tmp-"):
                        entry.unlink(missing_ok=True)  # left by a crash before its rename
                self._schemas[key], self._parts[key] = schema, parts
            return self._schemas[key], self._parts[key]

    def _forget(self, key: tuple[str, str, str]) -> None:
        self._schemas.pop(key, None)
        self._parts.pop(key, None)

    def _dataset_dir(self, project: str, dataset: str) -> Path:
        _check_project(project)
        _check_id("dataset", dataset)
        return _join(_join(self.root, project), dataset)

    def _table_dir(self, project: str, dataset: str, table: str) -> Path:
        path = self._dataset_dir(project, dataset)
        _check_id("table", table)
        return _join(path, table)

    def _existing_dataset(self, project: str, dataset: str) -> Path:
        path = self._dataset_dir(project, dataset)
        if not path.is_dir():
            raise _dataset_not_found(project, dataset)
        return path

    def _existing_table(self, project: str, dataset: str, table: str) -> Path:
        path = self._table_dir(project, dataset, table)
        if not path.is_dir():
            if not path.parent.is_dir():
                raise _dataset_not_found(project, dataset)
            raise _table_not_found(project, dataset, table)
        return path


# -- helpers shared with the servers -------------------------------------------------------------------


def check_columns(schema: pa.Schema, columns: Sequence[str] | None) -> None:
    """InvalidArgument naming the first of ``columns`` the schema lacks."""
    if columns is None:
        return
    names = set(schema.names)
    for c in columns:
        if c not in names:
            raise errors.InvalidArgument(f"Unrecognized name: {c}")


def cast_to_schema(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """``data`` with the columns and types of ``schema`` (see :meth:`TableStore.append`)."""
    import pyarrow as pa

    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        raise errors.InvalidArgument(
            f"append takes a pyarrow Table or RecordBatch, not {type(data).__name__}"
        )
    given = data.column_names
    if len(set(given)) != len(given):
        dup = next(n for n in given if given.count(n) > 1)
        raise errors.InvalidArgument(f"Duplicate column in the appended data: {dup}")
    for name in given:
        if schema.get_field_index(name) < 0:
            raise errors.InvalidArgument(f"no such field: {name}.")
    columns = []
    for field in schema:
        if field.name not in given:
            if not field.nullable:
                raise errors.InvalidArgument(f"Missing required field: {field.name}.")
            columns.append(pa.nulls(data.num_rows, field.type))
            continue
        col = data.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise errors.InvalidArgument(
                    f"Cannot convert column {field.name} from {col.type} to {field.type}: {e}"
                ) from None
        if not field.nullable and col.null_count:
            raise errors.InvalidArgument(f"Required field {field.name} cannot be null")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def read_parts(
    parts: Sequence[Part],
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    start: int = 0,
    stop: int | None = None,
) -> pa.Table:
    """Rows ``[start, stop)`` of the concatenation of ``parts``, opening only the parts that hold them."""
    import pyarrow as pa

    check_columns(schema, columns)
    out_schema = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    total = sum(p.num_rows for p in parts)
    stop = total if stop is None else min(stop, total)
    tables = []
    offset = 0
    for part in parts:
        lo, hi = max(start, offset), min(stop, offset + part.num_rows)
        if lo < hi:
            t = _open_part(part)
            if columns is not None:
                t = t.select(list(columns))
            tables.append(t.slice(lo - offset, hi - lo))
        offset += part.num_rows
        if offset >= stop:
            break
    if not tables:
        return out_schema.empty_table()
    return pa.concat_tables(tables)


def _open_part(part: Part) -> pa.Table:
    import pyarrow as pa

    # Memory-mapped: the batches point into the page cache, nothing is copied until someone writes them out.
    try:
        return pa.ipc.open_file(pa.memory_map(str(part.path))).read_all()
    except FileNotFoundError:
        raise errors.NotFound(f"Not found: the table of {part.path.name} was deleted") from None


def _scan(
    parts: list[Part], columns: Sequence[str] | None, key: tuple[str, str, str]
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    for part in parts:
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(part.path)))
        except FileNotFoundError:
            raise _table_not_found(*key) from None
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            yield batch if columns is None else batch.select(list(columns))


def project_problem(project: str) -> str | None:
    """What is wrong with a BigQuery project id, or None."""
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        return (
            f"Invalid project ID {errors.shown(project)}. Project IDs must start with a letter and contain only lowercase "
            "letters, digits and hyphens, at most 30 characters, not ending with a hyphen (or be "
            "domain.tld:project-id)."
        )
    return None


def dataset_problem(dataset: str) -> str | None:
    """What is wrong with a BigQuery dataset id, or None."""
    if not isinstance(dataset, str) or not _DATASET.fullmatch(dataset) or len(dataset) > _MAX_NAME:
        return (
            f"Invalid dataset ID {errors.shown(dataset)}. Dataset IDs must be alphanumeric (plus underscores) and must be "
            f"at most {_MAX_NAME} characters long here."
        )
    return None


def table_problem(table: str) -> str | None:
    """What is wrong with a BigQuery table id, or None."""
    if not isinstance(table, str) or not table:
        return f"Invalid table ID {errors.shown(table)}. A table ID cannot be empty."
    bad = next((c for c in table if not _table_char(c)), None)
    if bad is not None:
        return (
            f"Invalid table ID {errors.shown(table)}. Table IDs may contain Unicode letters, marks, numbers, underscores, "
            f"dashes and spaces, not {bad!r}."
        )
    if len(table.encode()) > _MAX_NAME:
        return f"Invalid table ID {errors.shown(table)}. Table IDs must be at most {_MAX_NAME} bytes of UTF-8 here."
    return None


def _table_char(c: str) -> bool:
    category = unicodedata.category(c)
    return category[0] in _TABLE_CATEGORIES or category in _TABLE_CATEGORIES


def _check_project(project: str) -> None:
    problem = project_problem(project)
    if problem is not None:
        raise errors.InvalidArgument(problem)


def _check_id(kind: str, value: str) -> None:
    problem = dataset_problem(value) if kind == "dataset" else table_problem(value)
    if problem is not None:
        raise errors.InvalidArgument(problem)


def _join(parent: Path, name: str) -> Path:
    # The name checks make every name one plain component; this makes sure of it on any platform.
    path = parent / name
    if name in ("", ".", "..") or path.parent != parent or path.name != name:
        raise errors.InvalidArgument(f"{name!r} is not a name the table store can keep")
    return path


def _dataset_not_found(project: str, dataset: str) -> errors.NotFound:
    return errors.NotFound(f"Not found: Dataset {project}:{dataset}")


def _table_not_found(project: str, dataset: str, table: str) -> errors.NotFound:
    return errors.NotFound(f"Not found: Table {project}:{dataset}.{table}")


def _children(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in path.iterdir() if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def _seq(path: Path) -> int:
    m = _PART.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def _remove_dir(path: Path) -> None:
    # One rename makes it vanish for readers; the files go after.
    trash = path.parent / f".trash-{uuid.uuid4().hex}"
    os.rename(path, trash)
    _fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
