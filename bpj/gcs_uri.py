"""``gs://`` URIs and Cloud Storage wildcards, read the same way by the output readers and the local stack.

``split`` checks a URI and returns ``(bucket, name)``; ``glob_regex`` turns a wildcard over object names into
a regex: ``*`` stays within one ``/`` level, ``**`` crosses levels, ``?`` is one character and ``[abc]`` or
``[!abc]`` a character class (a ``[`` that opens no class is itself).
"""

from __future__ import annotations

import re

from bpj import errors

__all__ = ["WILDCARD", "glob_regex", "split"]

BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
WILDCARD = re.compile(r"[*?\[]")
_TOKEN = re.compile(r"(\*\*|\*|\?|\[!?[^\]]+\])")


def split(
    uri: str, *, object_required: bool = False, error: type[errors.BpjError] = errors.UsageError
) -> tuple[str, str]:
    """``gs://bucket/name`` -> ``("bucket", "name")``; ``error`` naming the URI and what is wrong otherwise
    (UsageError for a caller's argument, InvalidArgument where a server would refuse it)."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        what = "object" if object_required else "path"
        raise error(f"{uri!r} is not a Cloud Storage URI: expected gs://bucket/{what}")
    bucket, _, name = uri[5:].partition("/")
    if not BUCKET.fullmatch(bucket):
        raise error(
            f"{uri!r} does not name a valid bucket ({bucket!r}): Cloud Storage bucket names are 3-63 "
            "characters (up to 222 with dots) of a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"
        )
    if object_required and not name:
        raise error(f"{uri!r} names no object: expected gs://bucket/object")
    if "\r" in name or "\n" in name or len(name.encode()) > 1024:
        raise error(f"{uri!r} is not a valid object name")
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
