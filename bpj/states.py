"""What each JobState means to a client: the one table that ``wait()``, ``cancel()`` and the many-job helpers
read, and the errors a wait ends with when a job does not succeed. Numbers are
google.cloud.aiplatform.v1.JobState's (the enum is public and stable), so this module imports no protobuf.

The rules:

- A state is *terminal* when the job will never change again: SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED,
  CANCELLED and EXPIRED. Waiting stops there, and only there.
- PAUSED and UPDATING are not terminal. Vertex AI documents PAUSED as "the job has been stopped, and can be
  resumed" (set by the service, e.g. while it updates the job) and UPDATING as "the job is being updated";
  both go back to RUNNING, so a waiter keeps polling (the official SDK's wait() wrongly stops on PAUSED).
- UNSPECIFIED is what a job reports before the service has set a state; it is not terminal either.
- The *outcome* of a terminal state says what a waiter does: SUCCEEDED and PARTIALLY_SUCCEEDED are
  successes (outputs exist to read; some instances may have failed, see ``completion_stats`` and
  ``partial_failures``); FAILED, CANCELLED and EXPIRED are not (``wait()`` raises JobFailed, JobCancelled,
  JobExpired). EXPIRED means the job ran longer than the service allows and was stopped.
- A state is *cancellable* when a CancelBatchPredictionJob call can still change the job's end: every
  non-terminal state except CANCELLING (already on its way to CANCELLED) and UNSPECIFIED (nothing is known).
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from bpj import errors


class Outcome(enum.Enum):
    ACTIVE = "active"  # not terminal: keep waiting
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class StateRule(NamedTuple):
    name: str
    terminal: bool
    success: bool
    cancellable: bool
    outcome: Outcome


class JobState(enum.IntEnum):
    """The states as a Python IntEnum, as the official SDK's ``JobState``: ``state.name``, ``str(state)`` and
    ``==`` with the ``bpj.types.JobState`` numbers behave as there. A number this table does not know (a
    newer API) gets a member of its own, named ``JOB_STATE_<number>``, rather than an error."""

    JOB_STATE_UNSPECIFIED = 0
    JOB_STATE_QUEUED = 1
    JOB_STATE_PENDING = 2
    JOB_STATE_RUNNING = 3
    JOB_STATE_SUCCEEDED = 4
    JOB_STATE_FAILED = 5
    JOB_STATE_CANCELLING = 6
    JOB_STATE_CANCELLED = 7
    JOB_STATE_PAUSED = 8
    JOB_STATE_EXPIRED = 9
    JOB_STATE_UPDATING = 10
    JOB_STATE_PARTIALLY_SUCCEEDED = 11

    @classmethod
    def _missing_(cls, value: object) -> JobState | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"JOB_STATE_{value}"
        member._value_ = value
        return member


_A = Outcome.ACTIVE
_J = JobState
# state: (terminal, success, cancellable, outcome)
_FLAGS: dict[JobState, tuple[bool, bool, bool, Outcome]] = {
    _J.JOB_STATE_UNSPECIFIED: (False, False, False, _A),
    _J.JOB_STATE_QUEUED: (False, False, True, _A),
    _J.JOB_STATE_PENDING: (False, False, True, _A),
    _J.JOB_STATE_RUNNING: (False, False, True, _A),
    _J.JOB_STATE_SUCCEEDED: (True, True, False, Outcome.SUCCEEDED),
    _J.JOB_STATE_FAILED: (True, False, False, Outcome.FAILED),
    _J.JOB_STATE_CANCELLING: (False, False, False, _A),
    _J.JOB_STATE_CANCELLED: (True, False, False, Outcome.CANCELLED),
    _J.JOB_STATE_PAUSED: (False, False, True, _A),
    _J.JOB_STATE_EXPIRED: (True, False, False, Outcome.EXPIRED),
    _J.JOB_STATE_UPDATING: (False, False, True, _A),
    _J.JOB_STATE_PARTIALLY_SUCCEEDED: (True, True, False, Outcome.PARTIALLY_SUCCEEDED),
}
TABLE: dict[int, StateRule] = {state: StateRule(state.name, *flags) for state, flags in _FLAGS.items()}


def as_enum(state: int) -> JobState:
    """``JobState(state)``, for a number this table knows or not."""
    return JobState(int(state))


TERMINAL = frozenset(n for n, r in TABLE.items() if r.terminal)
SUCCESS = frozenset(n for n, r in TABLE.items() if r.success)
CANCELLABLE = frozenset(n for n, r in TABLE.items() if r.cancellable)
# For List filters: ``state="JOB_STATE_SUCCEEDED" OR state="JOB_STATE_FAILED" ...``
TERMINAL_NAMES = tuple(TABLE[n].name for n in sorted(TERMINAL))


def rule(state: int) -> StateRule:
    """The rule for a state number; a state this table does not know (a newer API) counts as active."""
    found = TABLE.get(int(state))
    if found is None:
        return StateRule(f"JOB_STATE_{int(state)}", False, False, False, _A)
    return found


def is_terminal(state: int) -> bool:
    return rule(state).terminal


def is_success(state: int) -> bool:
    return rule(state).success


def is_cancellable(state: int) -> bool:
    return rule(state).cancellable


def name(state: int) -> str:
    return rule(state).name


# -- how a wait ends when the job did not succeed -------------------------------------------------


class JobFailed(errors.BpjError, RuntimeError):
    """The job ended without outputs to read: FAILED here, and CANCELLED or EXPIRED through the subclasses.
    A RuntimeError, as the official SDK's ``wait()`` raises for FAILED and CANCELLED (it never ends on
    EXPIRED; bpj treats it as the failure it is), so ``except RuntimeError`` written for it catches all three.

    ``job`` is the :class:`BatchPredictionJob` as it ended; ``status`` the job's google.rpc.Status
    (``bpj.types.Status``: ``code``, ``message``, ``details``), empty when the service gave none; ``state``
    the state number.
    """

    def __init__(self, job: Any) -> None:
        self.job = job
        self.status = job.gca_resource.error
        self.state = job.gca_resource.state
        super().__init__(str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the job's message (a job object without its client's credentials), so the error
        # crosses processes: a Dask or Ray task, concurrent.futures, multiprocessing.
        return _rebuilt, (type(self), type(self.job), self.job.gca_resource)

    def __str__(self) -> str:
        s = self.status
        try:
            code = errors.Code(s.code).name
        except ValueError:
            code = str(s.code)
        why = f": {code}: {s.message}" if s.code or s.message else ""
        return f"batch prediction job {self.job.resource_name} ended {name(self.state)}{why}"


class JobCancelled(JobFailed):
    """The job ended CANCELLED (someone, maybe this process, cancelled it)."""


class JobExpired(JobFailed):
    """The job ended EXPIRED: it ran past the time the service allows and was stopped."""


class WaitTimeout(errors.BpjError, TimeoutError):
    """``wait(timeout=)`` ran out before the job reached a terminal state; ``job`` is as last seen. Not a
    RuntimeError: the job did not fail, and the official ``wait()`` has no timeout to run out."""

    def __init__(self, job: Any, timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        state = name(job.gca_resource.state)
        super().__init__(f"batch prediction job {job.resource_name} still {state} after {timeout:g}s")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (type(self), type(self.job), self.job.gca_resource, self.timeout)


def _rebuilt(error: type[Any], job_class: Any, resource: Any, *more: Any) -> Any:
    """An error of a job again, unpickled: its job object made from the message (no RPC)."""
    return error(job_class.from_resource(resource), *more)


FAILURES: dict[Outcome, type[JobFailed]] = {
    Outcome.FAILED: JobFailed,
    Outcome.CANCELLED: JobCancelled,
    Outcome.EXPIRED: JobExpired,
}


def error_for(job: Any) -> JobFailed:
    """The error ``wait()`` raises for a job that ended without success."""
    return FAILURES[rule(job.gca_resource.state).outcome](job)
