"""The BigQuery REST API v2 subset that google-cloud-bigquery needs, over a :class:`TableStore`.

    server = serve_bigquery_rest(store)
    client = bigquery.Client(project="p", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": server.url})

Served under ``/bigquery/v2/projects/{p}``: ``datasets`` (list, insert, get, delete), ``datasets/{d}/tables``
(list, insert, get, delete), ``tables/{t}/data`` (tabledata.list) and ``tables/{t}/insertAll``. Values travel
in BigQuery's JSON encodings (every scalar a string, records as ``{"f": [...]}``, repeated fields as
``[{"v": ...}]``) and errors as BigQuery's JSON error body. Queries and jobs are not served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from bpj import errors
from bpj.local.bigquery.encoding import encode_rows, record_from_json, schema_from_json, schema_to_json
from bpj.local.bigquery.store import TableStore
from bpj.local.servers.guard import bearer_ok

if TYPE_CHECKING:
    from bpj.local.servers.http_server import RestServer

__all__ = [
    "BigQueryRestApp",
    "error_body",
    "encode_rows",
    "schema_from_json",
    "schema_to_json",
    "serve_bigquery_rest",
]

_PREFIX = "/bigquery/v2/projects/"
_DEFAULT_PAGE = 10_000
_MAX_PAGE = 100_000
_REASONS = {
    errors.Code.NOT_FOUND: "notFound",
    errors.Code.ALREADY_EXISTS: "duplicate",
    errors.Code.INVALID_ARGUMENT: "invalid",
    errors.Code.FAILED_PRECONDITION: "resourceInUse",
    errors.Code.UNAUTHENTICATED: "required",
    errors.Code.PERMISSION_DENIED: "accessDenied",
    errors.Code.UNIMPLEMENTED: "notImplemented",
    errors.Code.INTERNAL: "internalError",
}


def serve_bigquery_rest(
    store: TableStore,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    extra_names: Iterable[str] = (),
    max_body: int | None = None,
) -> RestServer:
    """Serves the REST API over ``store`` on ``host:port`` (0: a free port); ``.url`` and ``.stop()``.

    With ``token``, every request must carry ``Authorization: Bearer <token>``, else 401. The server also
    refuses a foreign ``Host`` or ``Origin`` (``extra_names`` adds names), see
    :class:`~bpj.local.servers.http_server.RestServer`; its refusals carry BigQuery's error body.
    """
    from bpj.local.servers.http_server import DEFAULT_MAX_BODY, RestServer

    return RestServer(
        BigQueryRestApp(store),
        host,
        port,
        token=token,
        extra_names=extra_names,
        max_body=DEFAULT_MAX_BODY if max_body is None else max_body,
    )


class BigQueryRestApp:
    """The WSGI application behind :func:`serve_bigquery_rest`. With ``token`` it checks the bearer token
    itself (for another WSGI server; :func:`serve_bigquery_rest` leaves that to its server)."""

    def __init__(self, store: TableStore, *, token: str | None = None) -> None:
        self.store = store
        self.token = token

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            status, body = self._handle(environ)
        except errors.ApiError as e:
            status, body = e.http_status, error_body(e)
        except RecursionError:  # a JSON body or schema nested deeper than Python recurses
            deep = errors.InvalidArgument("Invalid JSON payload received: it nests too deeply")
            status, body = deep.http_status, error_body(deep)
        except Exception as e:  # a bug here must still answer as BigQuery would
            err = errors.Internal(f"{type(e).__name__}: {e}")
            status, body = err.http_status, error_body(err)
        if body is None:
            start_response(f"{status} No Content", [("Content-Length", "0")])
            return [b""]
        payload = json.dumps(body).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [("Content-Type", "application/json; charset=UTF-8"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    @staticmethod
    def error_body(err: errors.ApiError) -> dict[str, Any]:
        """BigQuery's error body; :class:`~bpj.local.servers.http_server.RestServer` renders its refusals so."""
        return error_body(err)

    def _handle(self, environ: dict[str, Any]) -> tuple[int, Any]:
        if self.token is not None and not bearer_ok(environ.get("HTTP_AUTHORIZATION"), self.token):
            raise errors.Unauthenticated(
                "Request is missing required authentication credential. Expected OAuth 2 access token."
            )
        verb = environ["REQUEST_METHOD"]
        raw = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
        path = raw.split("?", 1)[0]
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if not path.startswith(_PREFIX):
            raise errors.NotFound(f"Not found: {verb} {path}")
        segments = [unquote(s) for s in path[len(_PREFIX) :].split("/")]
        body = _json_body(environ)
        project, rest = segments[0], segments[1:]
        route_key = (verb, tuple(rest[i] if i % 2 == 0 else "*" for i in range(len(rest))))
        handler = _ROUTES.get(route_key)
        if handler is None:
            if rest and rest[0] in ("queries", "jobs"):
                raise errors.Unimplemented("Queries and jobs are not served by the local BigQuery")
            raise errors.NotFound(f"Not found: {verb} {path}")
        return handler(self, project, rest[1::2], query, body)

    # -- datasets ------------------------------------------------------------------------------------

    def list_datasets(
        self, project: str, ids: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        names, token = _page(self.store.list_datasets(project), query)
        out: dict[str, Any] = {
            "kind": "bigquery#datasetList",
            "datasets": [
                {
                    "kind": "bigquery#dataset",
                    "id": f"{project}:{d}",
                    "datasetReference": {"projectId": project, "datasetId": d},
                    "location": "US",
                }
                for d in names
            ],
        }
        if token:
            out["nextPageToken"] = token
        return 200, out

    def insert_dataset(
        self, project: str, ids: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        ref = body.get("datasetReference") or {}
        dataset = ref.get("datasetId", "")
        if ref.get("projectId", project) != project:
            raise errors.InvalidArgument("datasetReference.projectId differs from the project in the URL")
        self.store.create_dataset(project, dataset)
        return 200, self._dataset(project, dataset)

    def get_dataset(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self._dataset(project, ids[0])

    def delete_dataset(
        self, project: str, ids: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        contents = query.get("deleteContents", "").lower() == "true"
        self.store.delete_dataset(project, ids[0], delete_contents=contents)
        return 204, None

    def _dataset(self, project: str, dataset: str) -> dict[str, Any]:
        created = _millis(self.store.dataset_created(project, dataset))
        return {
            "kind": "bigquery#dataset",
            "id": f"{project}:{dataset}",
            "etag": created,
            "datasetReference": {"projectId": project, "datasetId": dataset},
            "location": "US",
            "creationTime": created,
            "lastModifiedTime": created,
        }

    # -- tables ----------------------------------------------------------------------------------------

    def list_tables(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        dataset = ids[0]
        every = self.store.list_tables(project, dataset)
        names, token = _page(every, query)
        out: dict[str, Any] = {
            "kind": "bigquery#tableList",
            "totalItems": len(every),
            "tables": [
                {
                    "kind": "bigquery#table",
                    "id": f"{project}:{dataset}.{t}",
                    "tableReference": {"projectId": project, "datasetId": dataset, "tableId": t},
                    "type": "TABLE",
                }
                for t in names
            ],
        }
        if token:
            out["nextPageToken"] = token
        return 200, out

    def insert_table(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        dataset = ids[0]
        ref = body.get("tableReference") or {}
        table = ref.get("tableId", "")
        if ref.get("projectId", project) != project or ref.get("datasetId", dataset) != dataset:
            raise errors.InvalidArgument("tableReference differs from the dataset in the URL")
        if "view" in body or "materializedView" in body or "externalDataConfiguration" in body:
            raise errors.InvalidArgument("Only plain tables are served by the local BigQuery")
        schema = schema_from_json((body.get("schema") or {}).get("fields") or [])
        self.store.create_table(project, dataset, table, schema)
        return 200, self._table(project, dataset, table)

    def get_table(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self._table(project, ids[0], ids[1])

    def delete_table(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.store.delete_table(project, ids[0], ids[1])
        return 204, None

    def _table(self, project: str, dataset: str, table: str) -> dict[str, Any]:
        schema = self.store.schema(project, dataset, table)
        parts = self.store.parts(project, dataset, table)
        created = _millis(self.store.table_created(project, dataset, table))
        modified = (
            _millis(max([p.path.stat().st_mtime for p in parts[-1:]], default=0.0)) if parts else created
        )
        return {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "etag": f"{created}-{len(parts)}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": schema_to_json(schema)},
            "numRows": str(sum(p.num_rows for p in parts)),
            "numBytes": str(sum(p.num_bytes for p in parts)),
            "creationTime": created,
            "lastModifiedTime": modified,
            "type": "TABLE",
            "location": "US",
        }

    # -- rows ------------------------------------------------------------------------------------------

    def list_rows(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        dataset, table = ids
        start = _int_param(query, "pageToken", _int_param(query, "startIndex", 0))
        count = min(_int_param(query, "maxResults", _DEFAULT_PAGE) or _DEFAULT_PAGE, _MAX_PAGE)
        selected = query.get("selectedFields")
        columns = [c.strip().split(".")[0] for c in selected.split(",") if c.strip()] if selected else None
        total = self.store.num_rows(project, dataset, table)
        rows = self.store.read(project, dataset, table, columns, start=start, stop=start + count)
        timestamps = "float"
        if query.get("formatOptions.useInt64Timestamp", "").lower() == "true":
            timestamps = "int64"
        elif query.get("formatOptions.timestampOutputFormat", "") == "ISO8601_STRING":
            timestamps = "iso"
        out: dict[str, Any] = {"kind": "bigquery#tableDataList", "totalRows": str(total)}
        out["rows"] = encode_rows(rows, timestamps)
        if start + rows.num_rows < total:
            out["pageToken"] = str(start + rows.num_rows)
        out["etag"] = str(total)
        return 200, out

    def insert_all(self, project: str, ids: list[str], query: dict[str, str], body: Any) -> tuple[int, Any]:
        import pyarrow as pa

        dataset, table = ids
        schema = self.store.schema(project, dataset, table)
        skip_invalid = bool(body.get("skipInvalidRows"))
        ignore_unknown = bool(body.get("ignoreUnknownValues"))
        good: list[dict[str, Any]] = []
        failed: dict[int, list[dict[str, str]]] = {}
        for i, row in enumerate(body.get("rows") or []):
            problems: list[dict[str, str]] = []
            value = record_from_json(schema, (row or {}).get("json"), "", ignore_unknown, problems)
            if problems:
                failed[i] = problems
            else:
                good.append(value)
        out: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
        if failed and not skip_invalid:
            stopped = [{"reason": "stopped", "location": "", "debugInfo": "", "message": ""}]
            n = len(body.get("rows") or [])
            out["insertErrors"] = [{"index": i, "errors": failed.get(i, stopped)} for i in range(n)]
            return 200, out
        if good:
            self.store.append(project, dataset, table, pa.Table.from_pylist(good, schema=schema))
        if failed:
            out["insertErrors"] = [{"index": i, "errors": e} for i, e in sorted(failed.items())]
        return 200, out


_Handler = Callable[[BigQueryRestApp, str, list[str], dict[str, str], Any], tuple[int, Any]]
_ROUTES: dict[tuple[str, tuple[str, ...]], _Handler] = {
    ("GET", ("datasets",)): BigQueryRestApp.list_datasets,
    ("POST", ("datasets",)): BigQueryRestApp.insert_dataset,
    ("GET", ("datasets", "*")): BigQueryRestApp.get_dataset,
    ("DELETE", ("datasets", "*")): BigQueryRestApp.delete_dataset,
    ("GET", ("datasets", "*", "tables")): BigQueryRestApp.list_tables,
    ("POST", ("datasets", "*", "tables")): BigQueryRestApp.insert_table,
    ("GET", ("datasets", "*", "tables", "*")): BigQueryRestApp.get_table,
    ("DELETE", ("datasets", "*", "tables", "*")): BigQueryRestApp.delete_table,
    ("GET", ("datasets", "*", "tables", "*", "data")): BigQueryRestApp.list_rows,
    ("POST", ("datasets", "*", "tables", "*", "insertAll")): BigQueryRestApp.insert_all,
}


def error_body(err: errors.ApiError) -> dict[str, Any]:
    """BigQuery's JSON error body for an error."""
    reason = _REASONS.get(err.code, "invalid" if err.http_status == 400 else "backendError")
    return {
        "error": {
            "code": err.http_status,
            "message": err.message,
            "errors": [{"message": err.message, "domain": "global", "reason": reason}],
            "status": err.code.name,
        }
    }


# -- small helpers -------------------------------------------------------------------------------------------


def _json_body(environ: dict[str, Any]) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise errors.InvalidArgument(f"Invalid JSON payload received. {e}") from None
    if not isinstance(body, dict):
        raise errors.InvalidArgument("Invalid JSON payload received: expected an object")
    return body


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise errors.InvalidArgument(f"Invalid value for {name}: {text}") from None
    if value < 0:
        raise errors.InvalidArgument(f"Invalid value for {name}: {text}")
    return value


def _page(names: list[str], query: dict[str, str]) -> tuple[list[str], str]:
    start = _int_param(query, "pageToken", 0)
    count = _int_param(query, "maxResults", 0) or len(names) or 1
    chunk = names[start : start + count]
    return chunk, (str(start + count) if start + count < len(names) else "")


def _millis(seconds: float) -> str:
    return str(int(seconds * 1000))
