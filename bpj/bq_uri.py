"""``bq://`` URIs, read the same way by the client, the output readers and the local stack.

A BigQuery URI is ``bq://project``, ``bq://project.dataset`` or ``bq://project.dataset.table``. The project
may be domain-scoped, ``bq://example.com:my-project.dataset.table``: everything up to the colon is the
domain, dots included, and the project ends at the first dot after it. Dataset and table IDs never hold a
dot, a colon or a ``/``, so the rest splits at every dot.

``parse`` reads the shape only (None when it is not one of those); what each name may hold is BigQuery's
naming rules, checked where the names are used (``bpj.local.bigquery.store`` in the local stack).
``split_table`` and ``split_dataset`` check the shape a field needs and raise an error naming the URI.
"""

from __future__ import annotations

from typing import NamedTuple

from bpj import errors

__all__ = ["BqUri", "format_uri", "parse", "split_dataset", "split_table"]

PREFIX = "bq://"
TABLE_SHAPE = "bq://project.dataset.table"
DATASET_SHAPE = "bq://project or bq://project.dataset"


class BqUri(NamedTuple):
    """The names of a ``bq://`` URI; ``dataset`` and ``table`` are None when the URI stops before them."""

    project: str
    dataset: str | None = None
    table: str | None = None


def parse(uri: str) -> BqUri | None:
    """``bq://project[.dataset[.table]]`` -> its names, or None when ``uri`` is not that shape: no ``bq://``,
    an empty name, more than three names, or a ``:`` or ``/`` anywhere but a domain-scoped project's colon."""
    if not isinstance(uri, str) or not uri.startswith(PREFIX):
        return None
    rest = uri[len(PREFIX) :]
    domain, colon, rest = rest.partition(":") if ":" in rest else ("", "", rest)
    parts = rest.split(".")
    if colon and (not domain or "/" in domain):
        return None
    if len(parts) > 3 or any(not p or ":" in p or "/" in p for p in parts):
        return None
    project = domain + colon + parts[0]
    return BqUri(project, *parts[1:])


def split_table(
    uri: str, *, field: str = "", error: type[errors.BpjError] = errors.UsageError
) -> tuple[str, str, str]:
    """``bq://project.dataset.table`` -> ``(project, dataset, table)``; ``error`` naming ``field`` (if given)
    and the URI otherwise."""
    names = parse(uri)
    if names is None or names.dataset is None or names.table is None:
        raise error(f"{_where(field)}{errors.shown(uri)} is not {TABLE_SHAPE}")
    return names.project, names.dataset, names.table


def split_dataset(
    uri: str, *, field: str = "", error: type[errors.BpjError] = errors.UsageError
) -> tuple[str, str | None]:
    """``bq://project`` or ``bq://project.dataset`` -> ``(project, dataset or None)``; ``error`` naming
    ``field`` (if given) and the URI otherwise."""
    names = parse(uri)
    if names is None or names.table is not None:
        raise error(f"{_where(field)}{errors.shown(uri)} is not {DATASET_SHAPE}")
    return names.project, names.dataset


def format_uri(project: str, dataset: str | None = None, table: str | None = None) -> str:
    """The ``bq://`` URI of a project, dataset or table (``table`` needs ``dataset``)."""
    if table is not None and dataset is None:
        raise ValueError("a table URI needs a dataset")
    return PREFIX + ".".join(n for n in (project, dataset, table) if n is not None)


def _where(field: str) -> str:
    return f"{field} " if field else ""
