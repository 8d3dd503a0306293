"""``gs://`` URIs and Cloud Storage wildcards, read the same way by the output readers and the local stack.

``split`` checks a URI and returns ``(bucket, name)``; ``bucket_problem`` and ``object_problem`` say what is
wrong with a bucket or object name (None when nothing is), by Cloud Storage's documented naming rules plus
what the local stack refuses so that no name can reach outside its data dir: ``.`` and ``..`` path segments,
NUL and control characters. ``glob_regex`` turns a wildcard over object names into
a regex: ``*`` stays within one ``/`` level, ``**`` crosses levels, ``?`` is one character and ``[abc]`` or
``[!abc]`` a character class (a ``[`` that opens no class is itself).
"""

from __future__ import annotations

import re

from bpj import errors

__all__ = ["WILDCARD", "bucket_problem", "glob_regex", "object_problem", "split"]

BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET_RULES = (
    "Cloud Storage bucket names are 3-63 characters (up to 222 with dots, 63 between dots) of a-z, 0-9, "
    "'-', '_' and '.', starting and ending with a letter or digit"
)
MAX_OBJECT_NAME_BYTES = 1024


def bucket_problem(name: str) -> str | None:
    """What is wrong with a bucket name by Cloud Storage's rules, or None when nothing is."""
    if not isinstance(name, str) or not BUCKET.fullmatch(name):
        return _BUCKET_RULES
    parts = name.split(".")
    if "" in parts:
        return "a bucket name cannot have two dots in a row"
    if len(parts) == 1 and len(name) > 63 or any(len(p) > 63 for p in parts):
        return _BUCKET_RULES
    if _IPV4.fullmatch(name):
        return "a bucket name cannot be an IP address"
    if name.startswith("goog") or "google" in name:
        return "a bucket name cannot start with 'goog' or contain 'google'"
    return None


def object_problem(name: str) -> str | None:
    """What is wrong with an object name, or None: 1-1024 bytes of UTF-8 without CR or LF (Cloud Storage's
    rules), and, stricter, no control character and no ``.`` or ``..`` path segment."""
    if not isinstance(name, str) or not name:
        return "an object name cannot be empty"
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        return "an object name must be valid UTF-8"
    if size > MAX_OBJECT_NAME_BYTES:
        return f"an object name is at most {MAX_OBJECT_NAME_BYTES} bytes of UTF-8"
    if _CONTROL.search(name):
        return "an object name cannot contain NUL, CR, LF or other control characters"
    if any(part in (".", "..") for part in name.split("/")):
        return "an object name cannot have '.' or '..' path segments"
    if name.startswith(".well-known/acme-challenge/"):
        return "an object name cannot start with '.well-known/acme-challenge/'"
    return None


WILDCARD = re.compile(r"[*?\[]")
_TOKEN = re.compile(r"(\*\*|\*|\?|\[!?[^\]]+\])")


def split(
    uri: str, *, object_required: bool = False, error: type[errors.BpjError] = errors.UsageError
) -> tuple[str, str]:
    """``gs://bucket/name`` -> ``("bucket", "name")``; ``error`` naming the URI and what is wrong otherwise
    (UsageError for a caller's argument, InvalidArgument where a server would refuse it)."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        what = "object" if object_required else "path"
        raise error(f"{errors.shown(uri)} is not a Cloud Storage URI: expected gs://bucket/{what}")
    bucket, _, name = uri[5:].partition("/")
    problem = bucket_problem(bucket)
    if problem is not None:
        raise error(f"{errors.shown(uri)} does not name a valid bucket ({errors.shown(bucket)}): {problem}")
    if object_required and not name:
        raise error(f"{errors.shown(uri)} names no object: expected gs://bucket/object")
    # A prefix may end in '/', and a wildcard pattern is not a name yet: check what is there.
    problem = object_problem(name.rstrip("/")) if name.rstrip("/") else None
    if problem is not None:
        raise error(f"{errors.shown(uri)} does not name a valid object: {problem}")
    return bucket, name


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regex matching the object names that the wildcard ``pattern`` matches."""
    out = []
    for token in _TOKEN.split(pattern):
        if token == "**":
            out.append(".*")
        elif token == "*":
            out.append("[^/]*")
        elif token == "?":
            out.append("[^/]")
        elif token.startswith("[") and token.endswith("]") and len(token) > 2 and token != "[!]":
            body = token[1:-1]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(token))
    return re.compile("".join(out), re.DOTALL)
