"""bpj.gcs_uri: the URI checks, and Cloud Storage wildcards against a plain backtracking matcher."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import errors, gcs_uri

ALPHABET = "ab/."
TOKENS = st.one_of(
    st.sampled_from(["*", "**", "?"]),
    st.text(ALPHABET, min_size=1, max_size=3),
    st.builds(
        lambda neg, body: f"[{'!' if neg else ''}{body}]",
        st.booleans(),
        st.text("ab.", min_size=1, max_size=2),
    ),
)


def tokens_of(pattern: str) -> list[str]:
    """The pattern's tokens, read left to right: ``**``, ``*``, ``?``, a class ``[..]`` of at least one
    character, or one literal character."""
    out, i = [], 0
    while i < len(pattern):
        end = pattern.find("]", i + 1) if pattern[i] == "[" else -1
        if pattern.startswith("**", i):
            out.append("**")
        elif pattern[i] in "*?":
            out.append(pattern[i])
        elif end > i + 1:
            out.append(pattern[i : end + 1])
        else:
            out.append(pattern[i])
        i += len(out[-1])
    return out


def reference(pattern: list[str], name: str) -> bool:
    """Does ``name`` match the tokens: ``*`` any run without '/', ``**`` any run, ``?`` one non-'/'
    character, ``[..]``/``[!..]`` one character in (not in) the class, anything else itself."""

    @functools.cache
    def match(t: int, i: int) -> bool:
        if t == len(pattern):
            return i == len(name)
        tok = pattern[t]
        if tok == "**":
            return any(match(t + 1, j) for j in range(i, len(name) + 1))
        if tok == "*":
            j = i
            while True:
                if match(t + 1, j):
                    return True
                if j == len(name) or name[j] == "/":
                    return False
                j += 1
        if i == len(name):
            return False
        if tok == "?":
            return name[i] != "/" and match(t + 1, i + 1)
        if tok.startswith("[") and tok.endswith("]") and len(tok) > 2 and tok != "[!]":
            body = tok[1:-1]
            inside = name[i] in body.lstrip("!") if body.startswith("!") else name[i] in body
            hit = not inside if body.startswith("!") else inside
            return hit and match(t + 1, i + 1)
        return name.startswith(tok, i) and match(t + 1, i + len(tok))

    return match(0, 0)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=5), st.text(ALPHABET, max_size=8))
def test_wildcards_match_what_the_reference_matches(tokens, name):
    pattern = "".join(tokens)  # read whole: tokens next to each other may read differently joined
    assert bool(gcs_uri.glob_regex(pattern).fullmatch(name)) == reference(tokens_of(pattern), name)


def test_a_bracket_that_opens_no_class_is_itself():
    assert gcs_uri.glob_regex("a[]b").fullmatch("a[]b")
    assert gcs_uri.glob_regex("a[").fullmatch("a[")
    assert gcs_uri.glob_regex("x/*").fullmatch("x/y") and not gcs_uri.glob_regex("x/*").fullmatch("x/y/z")
    assert gcs_uri.glob_regex("x/**").fullmatch("x/y/z")


@pytest.mark.parametrize(
    "uri, words",
    [
        ("s3://b/o", "is not a Cloud Storage URI"),
        ("gs://B/o", "does not name a valid bucket"),
        ("gs://bucket", "names no object"),
        ("gs://bucket/a\nb", "does not name a valid object: .*control characters"),
        ("gs://bucket/a/../b", "does not name a valid object: .*'..' path segments"),
        ("gs://bucket/./b", "does not name a valid object: .*'..' path segments"),
        ("gs://bucket/a\x00b", "control characters"),
        ("gs://a..b/o", "two dots in a row"),
        ("gs://192.168.1.1/o", "IP address"),
        ("gs://google-data/o", "'google'"),
        ("gs://" + "a" * 64 + "/o", "3-63 characters"),
        ("gs://bucket/" + "é" * 513, "at most 1024 bytes"),
    ],
)
def test_bad_uris_say_what_is_wrong(uri, words):
    with pytest.raises(errors.InvalidArgument, match=words):
        gcs_uri.split(uri, object_required=True, error=errors.InvalidArgument)
    assert gcs_uri.split("gs://bucket/dir/", object_required=False) == ("bucket", "dir/")


# -- names, against a reference written from Cloud Storage's documented rules -------------------------------

BUCKET_CHARS = "abz09-_.AZ/ %\x00"


def bucket_ok(name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
    parts = name.split(".")
    return (
        3 <= len(name) <= 222
        and set(name) <= allowed
        and name[0].isalnum()
        and name[-1].isalnum()
        and all(0 < len(p) <= 63 for p in parts)
        and (len(parts) > 1 or len(name) <= 63)
        and not (len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts))
        and not name.startswith("goog")
        and "google" not in name
    )


@given(
    st.text(BUCKET_CHARS, max_size=70) | st.sampled_from(["goog1", "xgooglex", "1.2.3.4", "a" * 63, "a.b"])
)
def test_bucket_names_follow_the_documented_rules(name):
    assert (gcs_uri.bucket_problem(name) is None) == bucket_ok(name)


def object_ok(name: str) -> bool:
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        return False
    return (
        0 < size <= 1024
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
        and "." not in name.split("/")
        and ".." not in name.split("/")
        and not name.startswith(".well-known/acme-challenge/")
    )


HOSTILE = st.lists(
    st.sampled_from(["..", ".", "", "a", "é", "%2e%2e", "\x00", "\n", "\\", "\ud800", "x" * 300]), max_size=6
).map("/".join)


@given(HOSTILE | st.text(max_size=40))
def test_object_names_follow_the_documented_rules_and_never_climb(name):
    ok = gcs_uri.object_problem(name) is None
    assert ok == object_ok(name)
    if ok:  # fake-gcs-server joins a name under its bucket's directory
        import posixpath

        resolved = posixpath.normpath("/root/bucket/" + name)  # Go's filepath.Join: a leading '/' is no root
        assert posixpath.commonpath(["/root/bucket", resolved]) == "/root/bucket"
