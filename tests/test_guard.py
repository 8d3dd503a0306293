"""bpj.local.servers.guard: the Host, Origin and bearer-token checks every local server makes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bpj.local.servers.guard import Guard, bearer_ok, is_loopback, split_host


def test_own_names_pass_and_foreign_names_are_refused():
    g = Guard("127.0.0.1", 8080)
    for host in (
        "127.0.0.1:8080",
        "localhost:8080",
        "LOCALHOST",
        "[::1]:8080",
        "127.0.0.1",
        "127.0.0.1:9999",
    ):
        assert g.refusal(host=host) is None, host
    for host in ("evil.example:8080", "127.0.0.1.evil.example:8080", "", None, "[::1", "0.0.0.0:8080"):
        assert g.refusal(host=host) == (403, g.refusal(host=host)[1]), host
    assert "DNS rebinding" in g.refusal(host="evil.example:8080")[1]


def test_origins_other_than_our_own_are_refused():
    g = Guard("127.0.0.1", 8080)
    assert g.refusal(host="127.0.0.1:8080", origin="http://127.0.0.1:8080") is None
    assert g.refusal(host="127.0.0.1:8080", origin="http://localhost:8080/") is None
    for origin in (
        "https://evil.example",
        "null",
        "http://127.0.0.1:9",
        "file://",
        "http://127.0.0.1:8080.evil",
    ):
        assert g.refusal(host="127.0.0.1:8080", origin=origin)[0] == 403, origin


def test_bearer_scheme_in_any_case_and_token_exact():
    assert (
        bearer_ok("Bearer t0k", "t0k") and bearer_ok("bearer t0k", "t0k") and bearer_ok("BEARER  t0k ", "t0k")
    )
    assert (
        not bearer_ok("Bearer t0", "t0k") and not bearer_ok("Basic t0k", "t0k") and not bearer_ok(None, "t0k")
    )
    g = Guard("127.0.0.1", 1, token="s3cret")
    assert g.refusal(host="localhost:1", authorization="bearer s3cret") is None
    assert g.refusal(host="localhost:1", authorization="Bearer wrong")[0] == 401
    assert g.refusal(host="localhost:1")[0] == 401


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_wrong_token_never_passes(token, sent):
    assert bearer_ok(f"Bearer {sent}", token or "x") == (sent.strip() == (token or "x"))


@given(st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True), st.integers(1, 65535))
def test_split_host_round_trips(name, port):
    assert split_host(f"{name}:{port}") == (name, str(port))
    assert split_host(f"[::1]:{port}") == ("::1", str(port))


def test_loopback():
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_unspecified_bind_knows_this_machines_names():
    import socket

    g = Guard("0.0.0.0", 5, token="t")
    assert g.host_ok(f"{socket.gethostname()}:5") and g.host_ok("127.0.0.1:5")
    assert not g.host_ok("0.0.0.0:5")
