"""The ``bpj`` command: Vertex AI batch prediction jobs from a shell, and the local stack.

    bpj [--project P] [--location L] [--endpoint HOST:PORT] [--transport grpc|rest] COMMAND ...

    bpj local start|status                      run the local stack; see which endpoints answer
    bpj models upload|list|describe|delete      models
    bpj jobs create|describe|list|wait|cancel|delete
    bpj outputs read|export                     a job's predictions, through the fast readers
    bpj bench                                   one real job of N instances, timed phase by phase

The global options also come from BPJ_PROJECT, BPJ_LOCATION, BPJ_API_ENDPOINT and BPJ_TRANSPORT (and the
other variables ``bpj.config`` reads), and may be given before or after the command. Vertex AI calls use
Application Default Credentials, looked up at the first call. ``--json`` gives machine-readable output.

A mistake (a wrong flag, a missing job, an unreachable endpoint...) prints one line, ``bpj: ...``, on stderr
and exits non-zero: 2 for a command line argparse refuses, 1 otherwise, 130 on Ctrl-C. BPJ_DEBUG=1 shows
the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from bpj import errors
from bpj.cli.common import Parser, UsageFailure, add_globals, globals_parent, stderr


def parser() -> argparse.ArgumentParser:
    from bpj.cli.bench import add_bench
    from bpj.cli.local import add_local
    from bpj.cli.outputs import add_outputs
    from bpj.cli.resources import add_jobs, add_models

    ap = Parser(prog="bpj", description="Vertex AI batch prediction jobs, fast; and a local stack.")
    add_globals(ap, suppress=False)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = globals_parent()
    add_local(sub, parent)
    add_models(sub, parent)
    add_jobs(sub, parent)
    add_outputs(sub, parent)
    add_bench(sub, parent)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bpj`` command; returns the exit status."""
    try:
        try:
            args: Any = _parse(argv)
        except SystemExit as e:  # --help
            return e.code if isinstance(e.code, int) else 0
        if args.command != "local" or args.action != "start":
            _configure(args)
        return int(args.run(args))
    except UsageFailure as e:
        stderr(f"bpj: {e}")
        return 2
    except errors.UsageError as e:  # an argument refused before any connection: the usage exit code too
        stderr(f"bpj: {_one_line(e)}")
        return 2
    except errors.BpjError as e:
        stderr(f"bpj: {_one_line(e)}")
        return 1
    except KeyboardInterrupt:
        stderr("bpj: interrupted")
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`bpj outputs read ... | head`): nothing more to say.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
        return 1
    except (OSError, RuntimeError, NotImplementedError, ValueError) as e:
        # OSError: a file to export to; RuntimeError: e.g. reading the outputs of a job still running.
        if os.environ.get("BPJ_DEBUG"):
            raise
        stderr(f"bpj: {_one_line(e)}")
        return 1
    except Exception as e:
        if os.environ.get("BPJ_DEBUG"):
            raise
        stderr(f"bpj: unexpected {type(e).__name__}: {_one_line(e)} (BPJ_DEBUG=1 shows the traceback)")
        return 1


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."


__all__ = ["main", "parser"]
