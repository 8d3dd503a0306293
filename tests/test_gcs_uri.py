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
        ("gs://bucket/a\nb", "is not a valid object name"),
    ],
)
def test_bad_uris_say_what_is_wrong(uri, words):
    with pytest.raises(errors.InvalidArgument, match=words):
        gcs_uri.split(uri, object_required=True, error=errors.InvalidArgument)
    assert gcs_uri.split("gs://bucket/dir/", object_required=False) == ("bucket", "dir/")
