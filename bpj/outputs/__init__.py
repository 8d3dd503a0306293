"""Readers for batch prediction outputs: ``read_gcs("gs://...")`` and ``read_bigquery("bq://p.d.t")``.
Every reader has ``records()``, ``iter_batches()``, ``to_arrow()``, ``to_pandas()``,
``export(path)``, ``partitions()`` and ``errors()``; the GCS reader also has ``files()``. For the outputs of
publisher models: ``reader.texts()`` (Gemini: the first candidate's text, finish and block reasons, token
counts, status) and ``reader.embeddings()`` (vectors as a fixed-size list column), or the functions
``gemini_text(table)`` and ``embeddings(table)`` on rows already read.

Importing this package loads nothing heavy; pyarrow and urllib3 load when a reader is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpj.outputs.bigquery import BigQueryPartition, BigQueryReader
    from bpj.outputs.gcs import GcsPartition, GcsReader
    from bpj.outputs.publisher import embeddings, gemini_text
    from bpj.outputs.reader import Reader

__all__ = [
    "BigQueryPartition",
    "BigQueryReader",
    "GcsPartition",
    "GcsReader",
    "Reader",
    "embeddings",
    "gemini_text",
    "read_bigquery",
    "read_gcs",
]

_MiB = 1 << 20


def read_gcs(
    uri: str,
    *,
    max_workers: int | None = None,
    max_bytes_in_flight: int = 256 * _MiB,
    ordered: bool = False,
    progress: bool | None = None,
    kind: str = "predictions",
    endpoint: str | None = None,
    credentials: Any = None,
) -> GcsReader:
    """A reader over the predictions (``kind="errors"``: the errors) of a batch prediction job in Cloud Storage.

    ``uri``: the job's ``gs://`` output directory (its ``predictions_*`` files, or ``predictions.jsonl`` as
    Gemini jobs write it), one object, or a wildcard pattern (``*``, ``**``, ``?``); one that matches no
    object raises ``bpj.errors.NotFound`` at the first read (an existing directory without rows reads as
    no rows).
    ``max_workers`` threads (default: 4 for ``files()``, one per core when decoding), at most
    ``max_bytes_in_flight`` bytes of objects held between download and you, in file order when ``ordered``
    (else as they complete). ``progress``: a rows/bytes/rate
    line on stderr (None: when stderr is a terminal). ``endpoint``/``credentials`` default to ``bpj.init``'s
    ``gcs_endpoint`` and credentials (anonymous on a loopback endpoint, else Application Default Credentials).
    A corrupted download raises ``bpj.errors.DataCorruption``; its bytes are never returned.
    """
    from bpj.outputs.gcs import GcsReader

    return GcsReader(
        uri,
        max_workers=max_workers,
        max_bytes_in_flight=max_bytes_in_flight,
        ordered=ordered,
        progress=progress,
        kind=kind,
        endpoint=endpoint,
        credentials=credentials,
    )


def read_bigquery(uri: str, **options: Any) -> BigQueryReader:
    """A reader over a BigQuery table (``bq://project.dataset.table``) through the Storage Read API: one read
    session, its streams read in parallel, Arrow record batches, resumed at their offset after a broken
    stream. Columns of BigQuery's JSON type come as nested Arrow values (``parse_json=False``: as JSON text).
    Options: ``selected_fields``, ``row_restriction``, ``max_stream_count``, ``max_workers``,
    ``max_bytes_in_flight``, ``ordered``, ``progress``, ``client``, ``parse_json`` (see
    :mod:`bpj.outputs.bigquery`)."""
    from bpj.outputs.bigquery import read_bigquery as read

    return read(uri, **options)


_LAZY = {
    "Reader": "bpj.outputs.reader",
    "GcsReader": "bpj.outputs.gcs",
    "GcsPartition": "bpj.outputs.gcs",
    "BigQueryReader": "bpj.outputs.bigquery",
    "BigQueryPartition": "bpj.outputs.bigquery",
    "gemini_text": "bpj.outputs.publisher",
    "embeddings": "bpj.outputs.publisher",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bpj.outputs' has no attribute {name!r}")
