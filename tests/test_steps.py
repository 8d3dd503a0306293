"""The step machines of bpj.steps and bpj.many, each driven by both runners: the blocking one and the async one
must make the same calls, sleep the same pauses and give the same result or error.

The clients here answer from a script (a real client would need a server for every interleaving); the faces
over real transports and servers are tested in test_jobs.py, test_aio_jobs.py and test_many.py."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import errors, many, steps, types
from bpj.steps import Call, Emit, Sleep

S = types.JobState
RUNNERS = ["blocking", "async"]
NON_TERMINAL = [S.JOB_STATE_QUEUED, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, S.JOB_STATE_PAUSED]
TERMINAL = [S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_EXPIRED]
NAME = "projects/p/locations/l/batchPredictionJobs/1"


class Scripted:
    """A client whose every RPC answers with the next entry of its script (an exception is raised). It
    records each call as ``(rpc, request copy, options)``."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def __getattr__(self, rpc: str) -> Any:
        if rpc.startswith("_") or rpc not in self.__dict__.get("script", {}):
            raise AttributeError(rpc)

        def call(request: Any, **options: Any) -> Any:
            copy = type(request)()
            copy.CopyFrom(request)
            self.calls.append((rpc, copy, options))
            answer = self.script[rpc].pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return call


class AsyncOf:
    """The async face of a Scripted client: every RPC is a coroutine that yields to the loop once."""

    def __init__(self, inner: Scripted) -> None:
        self.inner = inner

    def __getattr__(self, rpc: str) -> Any:
        sync = getattr(self.inner, rpc)

        async def call(request: Any, **options: Any) -> Any:
            await asyncio.sleep(0)
            return sync(request, **options)

        return call


def drive(
    runner: str, machine: Any, client: Scripted, *, emits: bool = False, slept: list[float] | None = None
) -> tuple[Any, list[float]]:
    """Run ``machine`` with ``runner``; return (its result, or the list it emitted; the pauses it slept)."""
    slept = [] if slept is None else slept
    if runner == "blocking":
        if emits:
            return list(steps.iterate(machine, steps.one(client), sleep=slept.append)), slept
        return steps.run(machine, steps.one(client), sleep=slept.append), slept

    async def pause(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> Any:
        aclient = steps.one(AsyncOf(client))
        if emits:
            return [x async for x in steps.iterate_async(machine, aclient, sleep=pause)]
        return await steps.run_async(machine, aclient, sleep=pause)

    return asyncio.run(main()), slept


def outcome(runner: str, make: Any, script: dict[str, list[Any]], **kw: Any) -> tuple[Any, ...]:
    """Everything observable about one drive: result or error (class and message), calls, pauses."""
    client = Scripted(script)
    slept: list[float] = []
    try:
        ended: Any = ("returned", drive(runner, make(), client, slept=slept, **kw)[0])
    except Exception as e:  # noqa: BLE001 (the error is the outcome compared)
        ended = ("raised", type(e).__name__, str(e))
    return ended, [(rpc, req.SerializeToString(), opts) for rpc, req, opts in client.calls], slept


def both(make: Any, script: dict[str, list[Any]], **kw: Any) -> tuple[Any, ...]:
    """The outcome under both runners, which must be the same; ``make`` builds a fresh machine each time
    (its randomness pinned by the caller)."""
    blocking = outcome("blocking", make, script, **kw)
    asynced = outcome("async", make, script, **kw)
    assert blocking == asynced
    return blocking


# -- the runners ----------------------------------------------------------------------------------------


def scripted_machine(log: list[str]) -> steps.Machine[str]:
    try:
        first = yield Call("get_batch_prediction_job", types.GetBatchPredictionJobRequest(name=NAME))
        log.append(f"got {first.display_name}")
        try:
            yield Call("get_batch_prediction_job", types.GetBatchPredictionJobRequest(name=NAME))
        except errors.NotFound as e:
            log.append(f"caught {e.message}")
        yield Sleep(1.5)
        yield Emit(["a", "b"])
        return "done"
    finally:
        log.append("closed")


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_runner_answers_calls_throws_errors_in_sleeps_and_returns(runner):
    log: list[str] = []
    client = Scripted(
        {"get_batch_prediction_job": [types.BatchPredictionJob(display_name="x"), errors.NotFound("gone")]}
    )
    items, slept = drive(runner, scripted_machine(log), client, emits=True)
    assert items == ["a", "b"] and slept == [1.5]
    assert log == ["got x", "caught gone", "closed"]
    with pytest.raises(TypeError, match="iterate"):
        drive(
            runner,
            scripted_machine([]),
            Scripted(
                dict(client.__dict__["script"])
                | {"get_batch_prediction_job": [types.BatchPredictionJob(), errors.NotFound("gone")]}
            ),
        )


@pytest.mark.parametrize("runner", RUNNERS)
def test_an_error_the_machine_does_not_catch_reaches_the_caller_and_closes_it(runner):
    log: list[str] = []
    client = Scripted({"get_batch_prediction_job": [errors.PermissionDenied("no")]})
    with pytest.raises(errors.PermissionDenied, match="no"):
        drive(runner, scripted_machine(log), client)
    assert log == ["closed"]


def test_a_consumer_that_stops_early_closes_the_machine():
    log: list[str] = []
    client = Scripted({"get_batch_prediction_job": [types.BatchPredictionJob(), errors.NotFound("x")]})
    items = steps.iterate(scripted_machine(log), steps.one(client), sleep=lambda s: None)
    assert next(items) == "a"
    items.close()  # type: ignore[attr-defined]
    assert log[-1] == "closed"

    async def main() -> None:
        client2 = Scripted({"get_batch_prediction_job": [types.BatchPredictionJob(), errors.NotFound("x")]})
        it = steps.iterate_async(scripted_machine(log), steps.one(AsyncOf(client2)), sleep=asyncio.sleep)
        assert await it.__anext__() == "a"
        await it.aclose()  # type: ignore[attr-defined]

    log.clear()
    asyncio.run(main())
    assert log[-1] == "closed"


def test_the_machines_do_no_io_of_their_own():
    # Every machine is a plain generator: the runners are the only place that calls or sleeps.
    for machine in (
        steps.wait_job,
        steps.list_items,
        steps.find_by_request_id,
        steps.create_job,
        steps.wait_operation,
        many.completed,
        many.Watch.poll_steps,
    ):
        assert inspect.isgeneratorfunction(machine), machine
        source = inspect.getsource(machine)
        assert "time.sleep" not in source and "await" not in source


# -- pacing ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    poll=st.floats(0, 10),
    max_poll=st.floats(0, 60),
    growth=st.floats(1, 3),
    rng=st.lists(st.floats(0, 1), min_size=1, max_size=30),
)
def test_pauses_grow_to_the_cap_with_jitter(poll, max_poll, growth, rng):
    draws = iter(rng)
    pacer = steps.Pacer(poll, max_poll, None, growth=growth, rng=lambda: next(draws))
    step = poll
    for r in rng:
        pause = pacer.pause()
        assert pause == pytest.approx(step * (0.5 + r / 2))
        step = min(max(max_poll, poll), step * growth)


@settings(max_examples=60, deadline=None)
@given(timeout=st.floats(0, 20), poll=st.floats(0.01, 5))
def test_pauses_end_at_the_deadline_then_stop(timeout, poll):
    now = [0.0]
    pacer = steps.Pacer(poll, 5 * poll, timeout, clock=lambda: now[0], rng=lambda: 1.0)
    while (pause := pacer.pause()) is not None:
        assert pause > 0
        now[0] += pause
        assert now[0] <= timeout + 1e-9
    assert now[0] == pytest.approx(timeout) or timeout == 0


# -- wait -----------------------------------------------------------------------------------------------


class Held:
    """What wait_job needs of a job object: the resource, its name, refresh(resource)."""

    def __init__(self, state: int) -> None:
        self.gca_resource = types.BatchPredictionJob(name=NAME, state=state)
        self.resource_name = NAME

    def refresh(self, resource: Any) -> Held:
        self.gca_resource = resource
        return self


@settings(max_examples=40, deadline=None)
@given(
    path=st.lists(st.sampled_from(NON_TERMINAL), max_size=8),
    end=st.sampled_from(TERMINAL),
    timeout=st.one_of(st.none(), st.floats(0, 30)),
)
def test_wait_polls_until_terminal_or_the_deadline_the_same_under_both_runners(path, end, timeout):
    answers = [types.BatchPredictionJob(name=NAME, state=s) for s in [*path, end]]
    now = [0.0]

    def make() -> Any:
        now[0] = 0.0
        pacer = steps.Pacer(1.0, 4.0, timeout, clock=lambda: now[0], rng=lambda: 1.0)
        held = Held(S.JOB_STATE_PENDING)

        def machine() -> Any:
            # A clock that moves by the pauses slept: the deadline is reached the same way each run.
            gen = steps.wait_job(held, pacer, clock=lambda: now[0])
            answer = None
            while True:
                try:
                    step = gen.send(answer)
                except StopIteration as stop:
                    return (stop.value, held.gca_resource.state)
                if isinstance(step, Sleep):
                    now[0] += step.seconds
                answer = yield step

        return machine()

    (how, *result), calls, slept = both(make, {"get_batch_prediction_job": answers})
    assert how == "returned"
    finished, state = result[0]
    gets = len(calls)
    assert all(rpc == "get_batch_prediction_job" for rpc, _, _ in calls)
    assert len(slept) == gets - 1  # one Get at once, then a pause before each further one
    if finished:
        assert gets == len(answers) and state == end
    else:
        assert timeout is not None and sum(slept) == pytest.approx(timeout) and state in NON_TERMINAL


def test_wait_on_a_terminal_job_makes_no_call():
    for runner in RUNNERS:
        held = Held(S.JOB_STATE_SUCCEEDED)
        client = Scripted({"get_batch_prediction_job": []})
        result, slept = drive(runner, steps.wait_job(held, steps.Pacer(1, 1, None)), client)
        assert result is True and client.calls == [] and slept == []


# -- list, find, create ------------------------------------------------------------------------------------


def pages_of(jobs: list[Any], sizes: list[int]) -> list[Any]:
    out, at = [], 0
    for i, n in enumerate(sizes):
        last = i == len(sizes) - 1
        chunk = jobs[at:] if last else jobs[at : at + n]
        at += n
        out.append(
            types.ListBatchPredictionJobsResponse(
                batch_prediction_jobs=chunk, next_page_token="" if last else f"t{i}"
            )
        )
    return out


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 30), sizes=st.lists(st.integers(0, 10), min_size=1, max_size=6))
def test_listing_emits_every_item_in_order_one_call_per_page(count, sizes):
    jobs = [types.BatchPredictionJob(name=f"{NAME}{i}") for i in range(count)]
    pages = pages_of(jobs, sizes)

    def make() -> Any:
        request = types.ListBatchPredictionJobsRequest(parent="projects/p/locations/l")
        return steps.list_items("list_batch_prediction_jobs", request, "batch_prediction_jobs")

    (how, got), calls, _ = both(make, {"list_batch_prediction_jobs": pages}, emits=True)
    assert [j.name for j in got] == [j.name for j in jobs]
    tokens = [types.ListBatchPredictionJobsRequest.FromString(req).page_token for _, req, _ in calls]
    assert tokens == ["", *[f"t{i}" for i in range(len(sizes) - 1)]]


AMBIGUOUS_ERRORS = st.sampled_from([errors.DeadlineExceeded("lost"), errors.Unavailable("reset")])


@settings(max_examples=60, deadline=None)
@given(
    failures=st.lists(AMBIGUOUS_ERRORS, max_size=4),
    made_by_lost=st.one_of(st.none(), st.integers(0, 3)),
    with_id=st.booleans(),
)
def test_create_looks_up_after_an_ambiguous_failure_and_sends_at_most_three_times(
    failures, made_by_lost, with_id
):
    request_id = "k1" if with_id else None
    created = types.BatchPredictionJob(name=NAME, labels={"bpj_request_id": "k1"} if with_id else {})
    creates: list[Any] = [*failures, created]
    empty = types.ListBatchPredictionJobsResponse()
    found = types.ListBatchPredictionJobsResponse(batch_prediction_jobs=[created])
    # The lookup after the i-th lost reply finds the job when that reply had made it.
    lookups = [
        found if made_by_lost is not None and i >= made_by_lost else empty for i in range(len(failures))
    ]

    def make() -> Any:
        request = types.CreateBatchPredictionJobRequest(parent="projects/p/locations/l")
        return steps.create_job(request, 5.0, request_id, lookup_first=False, rng=lambda: 1.0)

    ended, calls, slept = both(
        make, {"create_batch_prediction_job": creates, "list_batch_prediction_jobs": lookups}
    )
    sent = [opts for rpc, _, opts in calls if rpc == "create_batch_prediction_job"]
    assert 1 <= len(sent) <= steps.CREATE_ATTEMPTS
    assert all(opts == {"timeout": 5.0, "retry": None} for opts in sent)
    if not with_id:
        # Without a request id nothing can be looked up: the first ambiguous failure is the caller's.
        assert len(sent) == 1 and [rpc for rpc, _, _ in calls] == ["create_batch_prediction_job"]
        assert ended[0] == ("raised" if failures else "returned")
        return
    if ended[0] == "returned":
        assert ended[1].name == NAME
    else:
        assert len(sent) == steps.CREATE_ATTEMPTS and ended[1] in ("DeadlineExceeded", "Unavailable")
    # Every send after the first follows a lookup that found nothing, after a pause that doubles.
    rpcs = [rpc for rpc, _, _ in calls]
    assert rpcs[0] == "create_batch_prediction_job"
    for i, rpc in enumerate(rpcs[1:], 1):
        if rpc == "create_batch_prediction_job":
            assert rpcs[i - 1] == "list_batch_prediction_jobs"
    assert slept == [0.5 * 2**i for i in range(len(slept))]


def test_a_request_id_the_caller_gave_is_looked_up_before_the_first_create():
    made = types.BatchPredictionJob(name=NAME, labels={"bpj_request_id": "mine"})
    for runner in RUNNERS:
        client = Scripted(
            {
                "list_batch_prediction_jobs": [
                    types.ListBatchPredictionJobsResponse(batch_prediction_jobs=[made])
                ],
                "create_batch_prediction_job": [],
            }
        )
        request = types.CreateBatchPredictionJobRequest(parent="projects/p/locations/l")
        result, _ = drive(runner, steps.create_job(request, None, "mine", lookup_first=True), client)
        assert result.name == NAME and [c[0] for c in client.calls] == ["list_batch_prediction_jobs"]


def test_a_refused_create_is_never_sent_again():
    for runner in RUNNERS:
        client = Scripted({"create_batch_prediction_job": [errors.InvalidArgument("bad")]})
        request = types.CreateBatchPredictionJobRequest(parent="projects/p/locations/l")
        with pytest.raises(errors.InvalidArgument):
            drive(runner, steps.create_job(request, None, "k", lookup_first=False), client)
        assert len(client.calls) == 1


# -- operations ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(polls=st.integers(0, 6), code=st.sampled_from([0, 5, 9, 13]))
def test_an_operation_is_polled_until_done_and_its_error_raised(polls, code):
    op_name = "projects/p/locations/l/operations/7"
    answers = [types.Operation(name=op_name) for _ in range(polls)]
    last = types.Operation(name=op_name, done=True)
    if code:
        last.error.code = code
        last.error.message = "it broke"
    answers[-1:] = [*answers[-1:], last] if answers else [last]

    def make() -> Any:
        return steps.wait_operation(types.Operation(name=op_name), None, "X.Y", rng=lambda: 0.5)

    ended, calls, slept = both(make, {"get_operation": answers})
    assert len(calls) == len(answers) == len(slept)
    if code:
        assert ended[0] == "raised" and ended[1] == errors.error_class(errors.Code.of(code)).__name__
        assert "it broke" in ended[2]
    else:
        assert ended == ("returned", last)


def test_an_operation_not_done_in_time_is_a_timeout_error():
    never = types.Operation(name="projects/p/locations/l/operations/8")
    ended, calls, slept = both(
        lambda: steps.wait_operation(never, 0.0, "X.Y", rng=lambda: 0.5), {"get_operation": [never] * 5}
    )
    assert ended[0] == "raised" and ended[1] == "TimeoutError" and "X.Y" in ended[2] and calls == []
