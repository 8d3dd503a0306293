"""``bpj local start|status``: run the local stack; see which endpoints answer."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
import time
from typing import Any

from bpj import errors
from bpj.cli.common import Unreachable, add_json, connect, dumps, print_json, print_table

STOP_DEADLINE = 8.0
"""Seconds a stop may take before ``bpj local start`` exits anyway (the stack must be gone within 10 s)."""


def start(args: argparse.Namespace) -> int:
    """Run the stack until SIGINT or SIGTERM; exit within :data:`STOP_DEADLINE` seconds of the first one."""
    from bpj.local.stack import LocalStack

    stop = threading.Event()
    _on_stop_signal(stop)
    stack = LocalStack(
        args.data_dir,
        host=args.host,
        token=args.token,
        gcs_endpoint=args.gcs_endpoint,
        workers=args.workers,
        console=args.console,
    )
    with stack:
        if args.json:  # one object, then nothing until it stops
            print(
                dumps(
                    {
                        "env": stack.env(),
                        "rest": stack.rest_endpoint,
                        "grpc_tls": stack.grpc_tls_endpoint,
                        "tls_cert": str(stack.tls_cert_path),
                        "data": str(stack.root),
                        "console": stack.console_url,
                        "console_login": stack.console_login_url() if stack.console_url else None,
                    }
                ),
                flush=True,
            )
            stop.wait()
            return 0
        print("# bpj local stack is running; Ctrl-C stops it. A client process needs:", flush=True)
        for key, value in stack.env().items():
            print(f"export {key}={value}")
        print(f"# REST: {stack.rest_endpoint}")
        print(f"# gRPC with TLS: {stack.grpc_tls_endpoint} (certificate: {stack.tls_cert_path})")
        print(f"# data: {stack.root}", flush=True)
        if stack.console_url:
            if stack.token:
                print(
                    f"# console: {stack.console_url}, sign in once (link valid 15 minutes) with "
                    f"{stack.console_login_url()}",
                    flush=True,
                )
            else:
                print(f"# console: {stack.console_url}", flush=True)
        if stack.client_host != stack.host:
            import socket

            print(
                f"# listening on {stack.host}: from another machine, use {socket.gethostname()} (or this "
                "machine's address) in place of 127.0.0.1, with BPJ_TOKEN set",
                flush=True,
            )
        stop.wait()
        print("# stopping", file=sys.stderr, flush=True)
    return 0


def example(args: argparse.Namespace) -> int:
    """A LogisticRegression trained on scikit-learn's bundled iris data (model.joblib) and instances for it:
    instances.jsonl (one list of 4 floats a line) and instances.csv (the same rows, with a header), the iris
    rows again and again."""
    import json
    from pathlib import Path

    if not 1 <= args.instances <= 10_000_000:
        raise errors.UsageError(f"--instances must be from 1 to 10000000, got {args.instances}")
    try:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ModuleNotFoundError as e:
        raise errors.UsageError(
            f"bpj local example needs scikit-learn: pip install 'bpj[local]' ({e})"
        ) from None
    out = Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), out / "model.joblib")
    rows = [x[i % len(x)].tolist() for i in range(args.instances)]
    (out / "instances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    header = "sepal_length,sepal_width,petal_length,petal_width\n"  # the model's features, in its order
    (out / "instances.csv").write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
    for name in ("model.joblib", "instances.jsonl", "instances.csv"):
        print(out / name)
    return 0


def _on_stop_signal(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``; the first one also arms a watchdog that ``os._exit``s the process
    :data:`STOP_DEADLINE` seconds later, whatever still runs (its children die with it: PR_SET_PDEATHSIG).

    The watchdog learns of the signal from the wakeup fd, which the C-level handler writes at once, so it is
    armed even while the main thread is stuck in a call that does not return to Python.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watchdog() -> None:
        while (received := os.read(read_fd, 1)) and received[0] not in (signal.SIGINT, signal.SIGTERM):
            pass
        time.sleep(STOP_DEADLINE)  # a clean stop ends the process before this returns
        print(
            f"bpj local start: the stack did not stop within {STOP_DEADLINE:.0f} s of "
            f"{signal.Signals(received[0]).name if received else 'the signal'}; exiting now. Threads still "
            "running:",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)

    threading.Thread(target=watchdog, name="bpj-stop-watchdog", daemon=True).start()


# -- status -----------------------------------------------------------------------------------------------

TIMEOUT = 3.0
_STATUS = {True: "answers", None: "reachable", False: "NO ANSWER"}


def _vertex(s: Any) -> str:
    from bpj import clients, types

    jobs = clients.job_service()
    parent = s.parent if s.project else f"projects/-/locations/{s.location}"
    response = jobs.list_batch_prediction_jobs(
        types.ListBatchPredictionJobsRequest(parent=parent, page_size=1), timeout=TIMEOUT, retry=None
    )
    more = "+" if response.next_page_token else ""
    return f"{len(response.batch_prediction_jobs)}{more} job(s) listed in {parent}"


def _http(url: str, s: Any) -> str:
    import requests

    headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
    try:
        r = requests.get(url, timeout=TIMEOUT, headers=headers, verify=s.tls_root_cert or True)
    except requests.RequestException as e:
        raise errors.Unavailable(str(e)) from None
    return f"HTTP {r.status_code}"


def _base(endpoint: str, s: Any) -> str:
    from bpj import config

    parsed = config.parse_endpoint(endpoint)
    return f"{'https' if parsed.tls(s.tls_root_cert) else 'http'}://{parsed.target()}"


def status(args: argparse.Namespace) -> int:
    from bpj import config

    s = config.settings()
    project = s.project or "-"
    checks = [
        ("vertex", f"{s.vertex_endpoint} ({s.transport})", s.vertex_endpoint, lambda: _vertex(s)),
        (
            "gcs",
            s.gcs_endpoint,
            s.gcs_endpoint,
            lambda: _http(f"{_base(s.gcs_endpoint, s)}/storage/v1/b?project={project}&maxResults=1", s),
        ),
        (
            "bigquery",
            s.bigquery_endpoint,
            s.bigquery_endpoint,
            lambda: _http(
                f"{_base(s.bigquery_endpoint, s)}/bigquery/v2/projects/{project}/datasets?maxResults=1", s
            ),
        ),
        ("bigquery-storage", s.bigquery_storage_endpoint, s.bigquery_storage_endpoint, lambda: "port open"),
    ]
    results: list[dict[str, Any]] = []
    for service, shown, endpoint, probe in checks:
        t = time.perf_counter()
        why = connect(endpoint, timeout=TIMEOUT)
        if why is not None:
            answers, detail = False, why.lower()
        else:
            try:
                answers, detail = True, probe()
            except (errors.Unavailable, errors.DeadlineExceeded) as e:
                answers, detail = False, e.message
            except errors.ApiError as e:
                # The service answered, if only to refuse (no permission, no such project...).
                answers, detail = True, f"{e.code.name}: {e.message}"
            except errors.BpjError as e:
                # Not asked (e.g. no credentials), but something listens there.
                answers, detail = None, f"port open; not asked: {e}"
        ms = (time.perf_counter() - t) * 1000
        results.append(
            {"service": service, "endpoint": shown, "answers": answers, "detail": detail, "ms": round(ms, 1)}
        )
    if args.json:
        print_json(results)
    else:
        print_table(
            (
                (r["service"], r["endpoint"], _STATUS[r["answers"]], f"{r['ms']:.0f} ms", r["detail"])
                for r in results
            ),
            ("SERVICE", "ENDPOINT", "STATUS", "TIME", "DETAIL"),
        )
    silent = [r["service"] for r in results if r["answers"] is False]
    if silent:
        raise Unreachable(f"no answer from {', '.join(silent)} (is `bpj local start` running?)")
    return 0


def add_local(sub: Any, parent: argparse.ArgumentParser) -> None:
    local = sub.add_parser("local", help="the local stack (Vertex emulator, GCS, BigQuery)")
    local_sub = local.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = local_sub.add_parser("start", help="run the local stack in the foreground and print its environment")
    p.add_argument("--data-dir", help="keep jobs, models, objects and tables here (default: a temporary dir)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); any other, 0.0.0.0 included, requires --token",
    )
    p.add_argument("--token", help="require this bearer token on every request, on every port (GCS included)")
    p.add_argument(
        "--gcs-endpoint", help="use this GCS-compatible server instead of starting fake-gcs-server"
    )
    p.add_argument("--workers", type=int, default=2, help="jobs run at once (default 2)")
    p.add_argument(
        "--no-console",
        dest="console",
        action="store_false",
        help="do not serve the web console (jobs, models; printed as '# console:')",
    )
    p.add_argument("--json", action="store_true", help="print the environment as one JSON object")
    p.set_defaults(run=start)

    p = local_sub.add_parser(
        "example",
        help="write a small scikit-learn model (iris) and instances for it to a directory, to try a job",
    )
    p.add_argument(
        "directory", metavar="DIR", help="where to write model.joblib, instances.jsonl and instances.csv"
    )
    p.add_argument("--instances", type=int, default=150, help="instances to write (default 150)")
    p.set_defaults(run=example)

    p = local_sub.add_parser(
        "status",
        parents=[parent],
        help="ping the configured endpoints (BPJ_* variables and flags) and say which answer",
    )
    add_json(p)
    p.set_defaults(run=status)
