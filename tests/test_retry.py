"""bpj.retry with a fake clock: backoff bounds, the overall deadline, RetryInfo, and idempotency."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import errors
from bpj._gen.services.job_service import CREATE_BATCH_PREDICTION_JOB, GET_BATCH_PREDICTION_JOB
from bpj.retry import call_with_retry, delays
from bpj.transport.base import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def failing(n: int, err: errors.ApiError):
    calls = []

    def attempt(timeout):
        calls.append(timeout)
        if len(calls) <= n:
            raise err
        return "ok"

    return attempt, calls


def get_with_retry(
    attempt, policy: RetryPolicy, clock: FakeClock, jitter: float, timeout: float | None = None
):
    """GetBatchPredictionJob's retry loop on the fake clock: the result, or None when it gave up."""
    try:
        return call_with_retry(
            attempt,
            method=GET_BATCH_PREDICTION_JOB,
            policy=policy,
            timeout=timeout,
            sleep=clock.sleep,
            clock=clock,
            rng=lambda: jitter,
        )
    except errors.Unavailable:
        return None


policies = st.builds(
    RetryPolicy,
    initial=st.floats(0.001, 2.0),
    maximum=st.floats(0.001, 30.0),
    multiplier=st.floats(1.0, 4.0),
    deadline=st.floats(0.01, 300.0),
    codes=st.just(frozenset({"UNAVAILABLE"})),
)


@given(policies, st.integers(0, 50), st.floats(0.0, 1.0))
def test_backoff_never_exceeds_its_cap(policy, n, jitter):
    cap = policy.initial
    for i, d in enumerate(delays(policy, rng=lambda: jitter)):
        assert 0 <= d <= max(cap, policy.initial) + 1e-9
        cap = min(policy.maximum, cap * policy.multiplier)
        if i == n:
            break


@settings(max_examples=200)
@given(policies, st.integers(0, 1000), st.floats(0.0, 1.0))
def test_retries_stop_at_the_deadline(policy, failures, jitter):
    clock = FakeClock()
    attempt, calls = failing(failures, errors.Unavailable("down"))
    result = get_with_retry(attempt, policy, clock, jitter)
    assert clock.now < policy.deadline
    if result == "ok":
        assert len(calls) == failures + 1
    for t in calls:
        assert t is not None and t <= policy.deadline


@settings(max_examples=200)
@given(
    policies,
    st.floats(0.0, 30.0),
    st.integers(0, 1000),
    st.floats(0.0, 1.0),
    st.sampled_from(["unreachable", "unavailable"]),
)
def test_an_endpoint_never_reached_is_retried_for_its_grace_only(policy, grace, failures, jitter, kind):
    policy = RetryPolicy(
        initial=policy.initial,
        maximum=policy.maximum,
        multiplier=policy.multiplier,
        deadline=policy.deadline,
        codes=policy.codes,
        unreachable_deadline=grace,
    )
    clock = FakeClock()
    err = errors.Unreachable("refused") if kind == "unreachable" else errors.Unavailable("down")
    attempt, calls = failing(failures, err)
    result = get_with_retry(attempt, policy, clock, jitter)
    limit = min(grace, policy.deadline) if kind == "unreachable" else policy.deadline
    assert clock.now < limit or (clock.now == 0 and limit == 0)
    if result == "ok":
        assert len(calls) == failures + 1


def test_unreachable_is_unavailable_with_a_hint():
    err = errors.Unreachable.of(errors.Unavailable("connection refused", rpc="R", resource="r"), "h:1")
    assert isinstance(err, errors.Unavailable) and err.code == errors.Code.UNAVAILABLE
    assert (err.rpc, err.resource) == ("R", "r")
    assert "nothing accepts connections at h:1" in str(err) and "connection refused" in str(err)


def test_retry_info_delay_is_honoured():
    clock = FakeClock()
    hint = errors.Unavailable(
        "busy", details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.500s"}]
    )
    attempt, calls = failing(2, hint)
    policy = RetryPolicy(initial=0.1, maximum=0.1, multiplier=1.0, deadline=60.0)
    assert get_with_retry(attempt, policy, clock, jitter=1.0) == "ok"
    assert clock.sleeps == [2.5, 2.5]


@pytest.mark.parametrize("err", [errors.Unavailable("x"), errors.DeadlineExceeded("x")])
def test_non_idempotent_method_is_tried_once(err):
    attempt, calls = failing(1, err)
    policy = RetryPolicy(codes=frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"}))
    with pytest.raises(type(err)):
        call_with_retry(
            attempt, method=CREATE_BATCH_PREDICTION_JOB, policy=policy, timeout=5.0, sleep=lambda s: None
        )
    assert calls == [5.0]


def test_codes_outside_the_policy_are_not_retried():
    attempt, calls = failing(1, errors.NotFound("gone"))
    with pytest.raises(errors.NotFound):
        call_with_retry(
            attempt, method=GET_BATCH_PREDICTION_JOB, policy=RetryPolicy(), timeout=None, sleep=lambda s: None
        )
    assert len(calls) == 1


def test_per_attempt_timeout_shrinks_to_what_is_left():
    clock = FakeClock()
    attempt, calls = failing(3, errors.Unavailable("x"))
    policy = RetryPolicy(initial=1.0, maximum=1.0, multiplier=1.0, deadline=10.0)
    assert get_with_retry(attempt, policy, clock, jitter=1.0, timeout=8.0) == "ok"
    assert calls == [8.0, 8.0, 8.0, 7.0]


def test_attempt_cut_short_by_the_overall_deadline_reports_the_error_that_caused_the_retry():
    clock = FakeClock()
    seen = []

    def attempt(timeout):
        seen.append(timeout)
        if len(seen) == 1:
            raise errors.Unavailable("backend down")
        raise errors.DeadlineExceeded("Deadline Exceeded")

    policy = RetryPolicy(initial=1.0, maximum=1.0, multiplier=1.0, deadline=1.5)
    with pytest.raises(errors.Unavailable, match="backend down"):
        call_with_retry(
            attempt,
            method=GET_BATCH_PREDICTION_JOB,
            policy=policy,
            timeout=None,
            sleep=clock.sleep,
            clock=clock,
            rng=lambda: 1.0,
        )
    assert seen == [1.5, 0.5]
