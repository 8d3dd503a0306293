"""The ``bpj`` command.

    bpj local start [--data-dir D] [--host H] [--token T] [--gcs-endpoint URL] [--workers N]

Errors print one line and exit non-zero; there is no traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from bpj import errors


def _local_start(args: argparse.Namespace) -> int:
    from bpj.local.stack import LocalStack

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack(
        args.data_dir, host=args.host, token=args.token, gcs_endpoint=args.gcs_endpoint, workers=args.workers
    )
    with stack:
        print("# bpj local stack is running; Ctrl-C stops it. A client process needs:", flush=True)
        for key, value in stack.env().items():
            print(f"export {key}={value}")
        print(f"# REST: {stack.rest_endpoint}")
        print(f"# gRPC with TLS: {stack.grpc_tls_endpoint} (certificate: {stack.tls_cert_path})")
        print(f"# data: {stack.root}", flush=True)
        stop.wait()
        print("# stopping", file=sys.stderr, flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bpj", description="Vertex AI batch prediction jobs, fast; and a local stack."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="the local stack (Vertex emulator, GCS, BigQuery)")
    local_sub = local.add_subparsers(dest="action", required=True)
    start = local_sub.add_parser(
        "start", help="run the local stack in the foreground and print its environment"
    )
    start.add_argument(
        "--data-dir", help="keep jobs, models, objects and tables here (default: a temporary dir)"
    )
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--token", help="require this bearer token on every gRPC and REST call")
    start.add_argument(
        "--gcs-endpoint", help="use this GCS-compatible server instead of starting fake-gcs-server"
    )
    start.add_argument("--workers", type=int, default=2, help="jobs run at once (default 2)")
    start.set_defaults(run=_local_start)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except errors.BpjError as e:
        print(f"bpj: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
