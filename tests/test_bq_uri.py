"""bpj.bq_uri: bq:// URIs against a regex written from BigQuery's description of them, and round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import bq_uri, errors

# A project (maybe after "domain:", the domain holding dots), then up to two names; no name is empty and
# none holds '.', ':' or '/'.
REFERENCE = re.compile(r"bq://((?:[^:/]+:)?[^.:/]+)(?:\.([^.:/]+))?(?:\.([^.:/]+))?")

ALPHABET = "ab.:/ \n"
NAME = st.text("abü-_ 1", min_size=1, max_size=4)
DOMAIN = st.lists(st.text("abc0-", min_size=1, max_size=4), min_size=1, max_size=3).map(".".join)
PROJECT = st.one_of(NAME, st.builds(lambda d, n: f"{d}:{n}", DOMAIN, NAME))


def reference(uri: str) -> bq_uri.BqUri | None:
    m = REFERENCE.fullmatch(uri)
    return None if m is None else bq_uri.BqUri(*m.groups())


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(ALPHABET, max_size=12), st.text(ALPHABET, max_size=12).map("bq://".__add__)))
def test_parse_reads_what_the_reference_reads(uri):
    assert bq_uri.parse(uri) == reference(uri)


@settings(max_examples=300, deadline=None)
@given(PROJECT, st.one_of(st.none(), NAME), st.one_of(st.none(), NAME))
def test_every_uri_of_valid_names_parses_back(project, dataset, table):
    table = None if dataset is None else table
    uri = bq_uri.format_uri(project, dataset, table)
    assert bq_uri.parse(uri) == (project, dataset, table) == reference(uri)
    if table is not None:
        assert bq_uri.split_table(uri) == (project, dataset, table)
        with pytest.raises(errors.UsageError, match=re.escape(repr(uri))):
            bq_uri.split_dataset(uri)
    else:
        assert bq_uri.split_dataset(uri) == (project, dataset)
        with pytest.raises(errors.UsageError, match=re.escape(repr(uri))):
            bq_uri.split_table(uri)


def test_domain_scoped_projects():
    assert bq_uri.parse("bq://example.com:proj.d.t") == ("example.com:proj", "d", "t")
    assert bq_uri.parse("bq://example.com:proj.d") == ("example.com:proj", "d", None)
    assert bq_uri.parse("bq://example.com:proj") == ("example.com:proj", None, None)
    assert bq_uri.split_table("bq://a.b.example.com:p-1.d.my table") == (
        "a.b.example.com:p-1",
        "d",
        "my table",
    )


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "bq://",
        "p.d.t",
        "gs://p/d",
        "bq://p..t",
        "bq://p.d.",
        "bq://.d.t",
        "bq://p.d.t.x",
        "bq://:p.d.t",
        "bq://a:b:c.d.t",
        "bq://p:d.t:x",
        "bq://p.d/../x.t",
        "bq:///etc",
        "bq://ex/ample.com:p.d.t",
    ],
)
def test_shapes_that_are_refused(uri):
    assert bq_uri.parse(uri) is None
    with pytest.raises(
        errors.InvalidArgument, match=rf"input_uri {re.escape(repr(uri))} is not bq://project"
    ):
        bq_uri.split_table(uri, field="input_uri", error=errors.InvalidArgument)
    with pytest.raises(errors.UsageError, match=re.escape(repr(uri))):
        bq_uri.split_dataset(uri)


def test_not_a_str():
    assert bq_uri.parse(None) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a dataset"):
        bq_uri.format_uri("p", None, "t")
