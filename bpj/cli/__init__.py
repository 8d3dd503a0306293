"""The ``bpj`` command: Vertex AI batch prediction jobs from a shell, and the local stack.

    bpj [--project P] [--location L] [--endpoint HOST:PORT] [--transport grpc|rest] COMMAND ...

    bpj local start|status|example              run the local stack; see which endpoints answer; demo data
    bpj gcs mb|ls|cp                            Cloud Storage: a bucket, its objects, copies in and out
    bpj bq load                                 BigQuery: a JSONL, CSV or Parquet file into a table
    bpj models upload|list|describe|delete      models
    bpj jobs create|describe|list|wait|cancel|delete
    bpj outputs read|export                     a job's predictions, through the fast readers
    bpj bench                                   one real job of N instances, timed phase by phase
    bpj completion bash|zsh                     a shell completion script

The global options also come from BPJ_PROJECT, BPJ_LOCATION, BPJ_API_ENDPOINT and BPJ_TRANSPORT (and the
other variables ``bpj.config`` reads), and may be given before or after the command. Vertex AI calls use
Application Default Credentials, looked up at the first call. ``--json`` gives machine-readable output.

A mistake (a wrong flag, a missing job, an unreachable endpoint...) prints one line, ``bpj: ...``, on stderr
(with ``--json``: one JSON object, ``{"error": {"status": ..., "message": ..., "exit": ...}}``) and exits
non-zero: 2 for an argument refused before any connection, 1 for a failure after (an API error, a job that
failed), 3 when ``jobs wait --timeout`` ran out with the job still running, 130 on Ctrl-C. BPJ_DEBUG=1 shows
the traceback of an unexpected error. ``bpj --version`` prints the version.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from bpj import errors, states
from bpj.cli.common import Parser, UsageFailure, add_globals, dumps, globals_parent, stderr


def parser() -> argparse.ArgumentParser:
    from bpj._version import __version__
    from bpj.cli.bench import add_bench
    from bpj.cli.completion import add_completion
    from bpj.cli.local import add_local
    from bpj.cli.outputs import add_outputs
    from bpj.cli.resources import add_jobs, add_models
    from bpj.cli.storage import add_storage

    ap = Parser(prog="bpj", description="Vertex AI batch prediction jobs, fast; and a local stack.")
    ap.add_argument("--version", action="version", version=f"bpj {__version__}")
    add_globals(ap, suppress=False)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = globals_parent()
    add_local(sub, parent)
    add_models(sub, parent)
    add_jobs(sub, parent)
    add_outputs(sub, parent)
    add_storage(sub, parent)
    add_bench(sub, parent)
    add_completion(sub)
    return ap


def _parse(argv: Sequence[str] | None) -> Any:
    args, extra = parser().parse_known_args(argv)
    if extra:
        command = " ".join(c for c in ("bpj", args.command, getattr(args, "action", None)) if c)
        raise UsageFailure(f"unrecognized arguments: {' '.join(extra)} (see `{command} --help`)")
    return args


def _configure(args: Any) -> None:
    """Apply the global options given on the command line (the rest come from the environment)."""
    from bpj import config

    given = {
        "project": args.project,
        "location": args.location,
        "api_endpoint": args.endpoint,
        "transport": args.transport,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if given:
        config.init(**given)
    else:
        config.settings()  # bad environment variables fail here, with the variable to change


# Exit statuses: an argument refused before any connection; a failure after; a wait that ran out.
USAGE, FAILURE, TIMED_OUT, INTERRUPTED = 2, 1, 3, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bpj`` command; returns the exit status."""
    wants_json = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        try:
            args: Any = _parse(argv)
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else 0
        if args.command != "local" or args.action != "start":
            _configure(args)
        return int(args.run(args))
    except UsageFailure as e:
        return _fail(wants_json, USAGE, "INVALID_ARGUMENT", str(e))
    except errors.UsageError as e:  # an argument refused before any connection: the usage exit code too
        return _fail(wants_json, USAGE, "INVALID_ARGUMENT", _one_line(e))
    except states.WaitTimeout as e:
        return _fail(wants_json, TIMED_OUT, "DEADLINE_EXCEEDED", _one_line(e))
    except errors.ApiError as e:
        return _fail(wants_json, FAILURE, e.code.name, _one_line(e))
    except errors.BpjError as e:
        return _fail(wants_json, FAILURE, _status_of(e), _one_line(e))
    except KeyboardInterrupt:
        return _fail(wants_json, INTERRUPTED, "CANCELLED", "interrupted")
    except BrokenPipeError:
        # The reader of our output went away (`bpj outputs read ... | head`): nothing more to say.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
        return FAILURE
    except (OSError, RuntimeError, NotImplementedError, ValueError) as e:
        # OSError: a file to export to; RuntimeError: e.g. reading the outputs of a job still running.
        if os.environ.get("BPJ_DEBUG"):
            raise
        return _fail(wants_json, FAILURE, "FAILED_PRECONDITION", _one_line(e))
    except Exception as e:
        if os.environ.get("BPJ_DEBUG"):
            raise
        what = f"unexpected {type(e).__name__}: {_one_line(e)} (BPJ_DEBUG=1 shows the traceback)"
        return _fail(wants_json, FAILURE, "UNKNOWN", what)


def _status_of(e: errors.BpjError) -> str:
    """The google.rpc code name that says what ended a command: a job's own, for a job that failed."""
    status = getattr(e, "status", None)
    code = getattr(status, "code", 0)
    if code:
        try:
            return errors.Code(code).name
        except ValueError:
            return "UNKNOWN"
    return "ABORTED" if isinstance(e, states.JobFailed) else "UNKNOWN"


def _fail(wants_json: bool, exit_status: int, status: str, message: str) -> int:
    """Say what went wrong on stderr (a line, or one JSON object under --json) and give the exit status."""
    if wants_json:
        stderr(dumps({"error": {"status": status, "message": message, "exit": exit_status}}))
    else:
        stderr(f"bpj: {message}")
    return exit_status


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."


__all__ = ["main", "parser"]
