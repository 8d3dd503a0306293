"""What every command shares: the global options, printing (tables, key/value, proto3 JSON), ``k=v``
parsing, and the reachability check that makes an unreachable endpoint fail in seconds, not after the
two minutes of retries a library call allows."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from bpj import errors


class Unreachable(errors.BpjError):
    """An endpoint did not accept a connection."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (``main`` prints them as one line), not usage + exit."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageFailure(f"{message} (see `{self.prog} --help`)")


class UsageFailure(Exception):
    """A command line argparse refused."""


# The global options, accepted before the command and after it. Before: defaults of None on the main
# parser; after: SUPPRESS, so a leaf parser only sets what was given there.
def add_globals(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("where calls go (also from BPJ_* environment variables)")
    g.add_argument("--project", default=default, help="project ID (BPJ_PROJECT, GOOGLE_CLOUD_PROJECT)")
    g.add_argument("--location", default=default, help="region, e.g. us-central1 (BPJ_LOCATION)")
    g.add_argument(
        "--endpoint",
        default=default,
        help="Vertex AI endpoint host:port (BPJ_API_ENDPOINT; default {location}-aiplatform.googleapis.com)",
    )
    g.add_argument(
        "--transport",
        default=default,
        choices=("grpc", "rest"),
        help="grpc (default) or rest (BPJ_TRANSPORT)",
    )


def globals_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add_globals(p, suppress=True)
    return p


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output (proto3 JSON)")


# -- values -----------------------------------------------------------------------------------------------


def key_values(pairs: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}``; a UsageError naming ``flag`` for anything else."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.UsageError(f"{flag} takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def json_value(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise errors.UsageError(f"{flag} must be JSON: {e}") from None


# -- printing ---------------------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode("ascii")
    return str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default))


def print_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[str(c) for c in header], *([("" if c is None else str(c)) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        if value not in (None, "", [], {}):
            print(f"{key + ':':<{width}} {value}")


def when(dt: datetime | None) -> str:
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S") if dt else ""


# -- reachability -----------------------------------------------------------------------------------------

_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "grpc_proxy", "all_proxy")


def connect(endpoint: str, timeout: float = 5.0) -> str | None:
    """None when ``endpoint`` accepts a TCP connection, else why not (``connection refused``...)."""
    from bpj import config

    parsed = config.parse_endpoint(endpoint)
    port = parsed.port or (443 if parsed.tls() else 80)
    try:
        socket.create_connection((parsed.host, port), timeout=timeout).close()
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return None


def require_reachable(endpoint: str, what: str, hint: str) -> None:
    """Raise Unreachable when ``endpoint`` accepts no connection. Skipped when a proxy is configured (the
    client goes through it, not straight to the endpoint)."""
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return
    why = connect(endpoint)
    if why is not None:
        raise Unreachable(f"cannot reach the {what} at {endpoint} ({why.lower()}); {hint}")


def vertex_reachable() -> Any:
    """The settings, after checking that their Vertex AI endpoint accepts connections."""
    from bpj import config

    s = config.settings()
    require_reachable(
        s.vertex_endpoint,
        "Vertex AI endpoint",
        "check --endpoint / BPJ_API_ENDPOINT, or start the local stack with `bpj local start`",
    )
    return s


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
