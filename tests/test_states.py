"""The job-state table: every JobState value is classified, and the rules above the table hold."""

from __future__ import annotations

from bpj import states, types

S = types.JobState


def test_every_job_state_is_classified_under_its_own_name():
    values = {v.number: v.name for v in S.DESCRIPTOR.values}
    assert set(states.TABLE) == set(values)
    for number, name in values.items():
        assert states.TABLE[number].name == name


def test_terminal_states_are_the_five_endings():
    assert {
        S.JOB_STATE_SUCCEEDED,
        S.JOB_STATE_PARTIALLY_SUCCEEDED,
        S.JOB_STATE_FAILED,
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_EXPIRED,
    } == states.TERMINAL
    assert not states.is_terminal(S.JOB_STATE_PAUSED)
    assert not states.is_terminal(S.JOB_STATE_UPDATING)


def test_rules_are_consistent():
    for number, rule in states.TABLE.items():
        assert rule.success <= rule.terminal, rule
        assert not (rule.cancellable and rule.terminal), rule
        assert (rule.outcome is states.Outcome.ACTIVE) == (not rule.terminal), rule
        assert states.is_success(number) == (
            number in {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_PARTIALLY_SUCCEEDED}
        )
    assert {
        S.JOB_STATE_QUEUED,
        S.JOB_STATE_PENDING,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_PAUSED,
        S.JOB_STATE_UPDATING,
    } == states.CANCELLABLE


def test_a_state_from_a_newer_api_counts_as_active():
    rule = states.rule(99)
    assert not rule.terminal and rule.outcome is states.Outcome.ACTIVE
    assert states.name(99) == "JOB_STATE_99"


def test_terminal_names_are_filter_ready():
    assert "JOB_STATE_EXPIRED" in states.TERMINAL_NAMES and len(states.TERMINAL_NAMES) == 5


def test_failed_outcomes_map_to_their_errors():
    from bpj.states import JobCancelled, JobExpired, JobFailed

    assert {o: c for o, c in states.FAILURES.items()} == {
        states.Outcome.FAILED: JobFailed,
        states.Outcome.CANCELLED: JobCancelled,
        states.Outcome.EXPIRED: JobExpired,
    }
    assert {r.outcome for r in states.TABLE.values() if r.terminal and not r.success} == set(states.FAILURES)


def test_the_enum_has_the_wire_numbers():
    assert states.as_enum(S.JOB_STATE_EXPIRED).name == "JOB_STATE_EXPIRED"
    assert states.as_enum(S.JOB_STATE_EXPIRED) == S.JOB_STATE_EXPIRED
    assert states.as_enum(99) == 99
