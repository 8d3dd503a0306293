"""bpj.many against FakeVertex: wait_all / as_completed cost one List call per page of results per poll
(counted by the server), update every job object from what List returned, and end right on every
terminal state; submit_many keeps at most max_in_flight jobs not terminal at the server and backs off on
RESOURCE_EXHAUSTED."""

from __future__ import annotations

import math

import pytest

from bpj import errors, states, types
from bpj.jobs import BatchPredictionJob, JobCancelled, JobExpired, JobFailed
from bpj.many import (
    BATCH_LABEL,
    JobsFailed,
    NotDone,
    SubmitFailed,
    Watch,
    as_completed,
    filters,
    submit_many,
    wait_all,
)

S = types.JobState
LIST = "ListBatchPredictionJobs"
GET = "GetBatchPredictionJob"


def config(i: int = 0, **kw):
    return {
        "job_display_name": f"job-{i}",
        "model_name": "iris",
        "gcs_source": f"gs://bpj-in/{i}.jsonl",
        "gcs_destination_prefix": "gs://bpj-out/run",
        **kw,
    }


def submit(n: int, **kw):
    return [BatchPredictionJob.submit(**config(i, **kw)) for i in range(n)]


def test_wait_all_on_500_jobs_costs_one_list_per_page_per_poll(bpj_fake):
    jobs = submit(500, labels={"run": "nightly"})
    names = [j.resource_name for j in jobs]
    per_poll = []

    def between_polls(_seconds):
        # Record what the poll that just ended cost, then end the next 100 jobs at the server.
        per_poll.append((bpj_fake.calls[LIST], bpj_fake.calls[GET]))
        bpj_fake.reset_calls()
        done = len(per_poll) - 1
        for k, name in enumerate(names[done * 100 : (done + 1) * 100]):
            bpj_fake.finish(name, S.JOB_STATE_SUCCEEDED if k % 10 else S.JOB_STATE_FAILED, successful=k)

    bpj_fake.reset_calls()
    with pytest.raises(JobsFailed) as e:
        wait_all(jobs, poll=0, page_size=100, sleep=between_polls)
    per_poll.append((bpj_fake.calls[LIST], bpj_fake.calls[GET]))
    # Six polls (one before any job ended, then one per 100 ended). Each lists the labelled jobs created
    # from the whole second of the oldest job it still watches on (older pages are skipped), in pages of
    # 100: one List call per page and no Get, whatever the number of jobs. Poll p watches the jobs from
    # 100 * (p - 1) on (a poll stops watching the jobs it saw end). Five pages each when the 500 were
    # created within one second.
    seconds = [j.gca_resource.create_time.seconds for j in jobs]

    def pages(poll: int) -> int:
        since = min(seconds[max(0, poll - 1) * 100 :])
        return -(-sum(s >= since for s in seconds) // 100)

    assert per_poll == [(pages(p), 0) for p in range(6)]
    assert per_poll[0] == (5, 0)
    assert len(e.value.failures) == 50 and all(type(f) is JobFailed for f in e.value.failures)
    assert e.value.jobs == jobs
    assert all(states.is_terminal(j.gca_resource.state) for j in jobs)
    assert jobs[7].completion_stats.successful_count == 7  # the objects hold what List returned
    assert jobs[7].gca_resource == bpj_fake.job(names[7])


def test_the_filter_follows_the_jobs(bpj_fake):
    labelled = submit(3, labels={"run": "a", "team": "x"})
    assert filters(labelled)[0].startswith('labels.run="a" AND create_time>="')
    mixed = [*labelled, *submit(2, labels={"run": "b"})]
    (window,) = filters(mixed)
    assert window.startswith('create_time>="') and ' AND create_time<="' in window
    assert filters(mixed, "create_time") == [window]
    with pytest.raises(errors.UsageError, match="labels"):
        filters(mixed, "labels")
    with pytest.raises(errors.UsageError, match="by"):
        filters(mixed, "magic")
    # Names: chunks of at most MAX_FILTER_CHARS, each listing its jobs only.
    many = submit(120)
    chunks = filters(many, "names")
    assert len(chunks) == math.ceil(len(" OR ".join(f'name="{j.resource_name}"' for j in many)) / 4000)
    assert all(len(c) <= 4000 for c in chunks)
    bpj_fake.reset_calls()
    Watch(many, by="names").poll()
    assert bpj_fake.calls[LIST] == len(chunks) and bpj_fake.calls[GET] == 0
    bpj_fake.reset_calls()
    Watch(mixed, by="create_time").poll()
    assert bpj_fake.calls[LIST] == 1 and bpj_fake.calls[GET] == 0


def test_as_completed_yields_in_the_order_jobs_end(bpj_fake):
    jobs = submit(4, labels={"run": "x"})
    bpj_fake.finish(jobs[3].resource_name, S.JOB_STATE_SUCCEEDED)
    jobs[3].refresh()
    order = [2, 0, 1]

    def between_polls(_seconds):
        if order:
            bpj_fake.finish(jobs[order.pop(0)].resource_name, S.JOB_STATE_SUCCEEDED)

    bpj_fake.reset_calls()
    it = as_completed(jobs, poll=0, sleep=between_polls)
    assert next(it) is jobs[3] and sum(bpj_fake.calls.values()) == 0  # terminal already: no call
    assert [j.display_name for j in it] == ["job-2", "job-0", "job-1"]
    assert bpj_fake.calls[GET] == 0


def test_every_terminal_state_ends_the_watch_with_its_outcome(bpj_fake):
    jobs = submit(5, labels={"run": "x"})
    ends = [
        S.JOB_STATE_SUCCEEDED,
        S.JOB_STATE_PARTIALLY_SUCCEEDED,
        S.JOB_STATE_FAILED,
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_EXPIRED,
    ]
    bpj_fake.set_state(jobs[0].resource_name, S.JOB_STATE_PAUSED)  # not terminal: keep watching
    with pytest.raises(NotDone) as e:
        wait_all(jobs, timeout=0.05, poll=0.01)
    assert len(e.value.not_done) == 5 and e.value.done == []
    for job, state in zip(jobs, ends, strict=True):
        bpj_fake.finish(job.resource_name, state, error=(errors.Code.INTERNAL, "boom"))
    with pytest.raises(JobsFailed) as e:
        wait_all(jobs, poll=0)
    assert [type(f) for f in e.value.failures] == [JobFailed, JobCancelled, JobExpired]
    assert "boom" in str(e.value.failures[0]) and "3 of 5 jobs did not succeed" in str(e.value)
    assert wait_all(jobs, poll=0, raise_on_failure=False) == jobs
    assert [j.gca_resource.state for j in jobs] == ends


def test_same_job_twice_and_two_locations(bpj_fake):
    here = submit(2)
    there = [BatchPredictionJob.submit(**config(9, location="europe-west4", model_name="m"))]
    twin = BatchPredictionJob.from_resource(here[0].gca_resource)
    for job in [*here, *there]:
        bpj_fake.finish(job.resource_name, S.JOB_STATE_SUCCEEDED, successful=3)
    bpj_fake.reset_calls()
    assert wait_all([*here, twin, *there], poll=0) == [*here, twin, *there]
    assert bpj_fake.calls[LIST] == 2 and bpj_fake.calls[GET] == 0  # one List per location
    assert twin.completion_stats.successful_count == 3 == here[0].completion_stats.successful_count


def test_a_job_the_list_misses_gets_one_get(bpj_fake):
    jobs = submit(3, labels={"run": "x"})
    bpj_fake.finish(jobs[1].resource_name, S.JOB_STATE_SUCCEEDED)
    jobs[1].delete()
    bpj_fake.reset_calls()
    with pytest.raises(errors.NotFound, match=jobs[1].resource_name.rsplit("/", 1)[-1]):
        Watch(jobs).poll()
    assert bpj_fake.calls[LIST] == 1 and bpj_fake.calls[GET] == 1


def test_arguments_are_checked(bpj_fake):
    jobs = submit(1)
    for kw, field in [
        ({"poll": -1}, "poll"),
        ({"by": "x"}, "by"),
        ({"page_size": 0}, "page_size"),
        ({"timeout": "1"}, "timeout"),
    ]:
        with pytest.raises(errors.UsageError, match=field):
            wait_all(jobs, **kw)
    with pytest.raises(errors.UsageError, match="jobs"):
        wait_all([jobs[0].resource_name])


# -- submit_many ------------------------------------------------------------------------------------------


def in_flight_at_each_create(fake):
    """For each job (in creation order), how many jobs were not terminal at the server when it was made."""
    made = fake.jobs()
    counts = []
    for k, job in enumerate(made):
        t = job.create_time.ToNanoseconds()
        counts.append(
            sum(
                1
                for other in made[:k]
                if not other.HasField("end_time") or other.end_time.ToNanoseconds() > t
            )
        )
    return counts


def test_submit_many_keeps_at_most_max_in_flight(bpj_fake):
    waits = []

    def sleep(seconds):
        # Time passes at the server: the oldest running job ends.
        waits.append(seconds)
        running = [j for j in bpj_fake.jobs() if not states.is_terminal(j.state)]
        bpj_fake.finish(running[0].name, S.JOB_STATE_SUCCEEDED)

    bpj_fake.reset_calls()
    jobs = submit_many((config(i) for i in range(20)), max_in_flight=4, poll=0.5, sleep=sleep)
    assert [j.display_name for j in jobs] == [f"job-{i}" for i in range(20)]
    counts = in_flight_at_each_create(bpj_fake)
    assert max(counts) == 3 and counts[:4] == [0, 1, 2, 3]  # never a 5th in flight
    assert len(waits) == 16 and bpj_fake.calls[GET] == 0
    labels = {j.labels[BATCH_LABEL] for j in jobs}
    assert len(labels) == 1  # one shared label: one List per page to watch them
    bpj_fake.reset_calls()
    for j in jobs:
        bpj_fake.finish(j.resource_name) if not states.is_terminal(
            bpj_fake.job(j.resource_name).state
        ) else None
    wait_all(jobs, poll=0)
    assert bpj_fake.calls[LIST] == 1 and bpj_fake.calls[GET] == 0


def test_submit_many_backs_off_on_resource_exhausted(bpj_fake):
    waits = []
    bpj_fake.inject("CreateBatchPredictionJob", errors.ResourceExhausted("quota"), times=4)
    jobs = submit_many([config(0), config(1)], backoff=1.0, max_backoff=4.0, sleep=waits.append)
    assert len(jobs) == 2 and bpj_fake.calls["CreateBatchPredictionJob"] == 6
    assert len(bpj_fake.jobs()) == 2  # a refused create made no job
    caps = [1.0, 2.0, 4.0, 4.0]  # exponential, capped, with jitter in [cap/2, cap]
    assert all(cap / 2 <= w <= cap for w, cap in zip(waits, caps, strict=True))

    waits.clear()
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    bpj_fake.inject(
        "CreateBatchPredictionJob", errors.ResourceExhausted("quota", details=[retry_info]), times=2
    )
    submit_many([config(2)], sleep=waits.append, batch_label=False)
    assert waits == [7.0, 7.0]  # the server's RetryInfo, honoured

    bpj_fake.inject("CreateBatchPredictionJob", errors.ResourceExhausted("quota"), times=100)
    with pytest.raises(SubmitFailed) as e:
        submit_many([config(3)], backoff=0.01, patience=0.05, sleep=lambda s: None)
    assert isinstance(e.value.error, errors.ResourceExhausted) and e.value.index == 0 and e.value.jobs == []


def test_submit_many_stops_on_other_errors_with_the_jobs_so_far(bpj_fake):
    with pytest.raises(SubmitFailed, match="config #2") as e:
        submit_many([config(0), config(1), config(2, labels={"Bad": "x"}), config(3)])
    assert isinstance(e.value.error, errors.UsageError) and "labels" in str(e.value.error)
    assert [j.display_name for j in e.value.jobs] == ["job-0", "job-1"]
    assert len(bpj_fake.jobs()) == 2
    for bad, field in [({"sync": True}, "sync"), ("not a dict", "configs")]:
        with pytest.raises(SubmitFailed) as e:
            submit_many([bad if isinstance(bad, str) else config(**bad)])
        assert field in str(e.value.error)
    with pytest.raises(errors.UsageError, match="max_in_flight"):
        submit_many([], max_in_flight=0)
    with pytest.raises(errors.UsageError, match="batch_label"):
        submit_many([], batch_label="Not Valid")


# -- the local stack, gRPC and REST ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_submit_many_and_wait_all_on_the_local_stack(bpj_local_stack, transport):
    import json

    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from bpj.models import Model
    from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes

    bpj_local_stack.init(transport=transport)
    gcs = bpj_local_stack.gcs
    for bucket in ("many-models", "many-in", "many-out"):
        gcs.create_bucket(bucket)
    data = load_iris()
    gcs.write(
        "gs://many-models/tree/model.joblib",
        joblib_bytes(DecisionTreeClassifier().fit(data.data, data.target)),
    )
    rows = data.data.tolist()[::15]
    gcs.write("gs://many-in/rows.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    model = Model.upload(
        display_name="tree", artifact_uri="gs://many-models/tree", serving_container_image_uri=SKLEARN_IMAGE
    )
    configs = [
        {
            "job_display_name": f"many-{transport}-{i}",
            "model_name": model.versioned_resource_name,
            "gcs_source": "gs://many-in/rows.jsonl" if i != 2 else "gs://many-in/missing.jsonl",
            "gcs_destination_prefix": f"gs://many-out/{transport}/{i}",
        }
        for i in range(4)
    ]
    jobs = submit_many(configs, max_in_flight=2, poll=0.05)
    ended = [j.display_name for j in as_completed(jobs, poll=0.05, timeout=60)]
    assert sorted(ended) == sorted(c["job_display_name"] for c in configs)
    with pytest.raises(JobsFailed) as e:
        wait_all(jobs, poll=0.05)
    assert [f.job for f in e.value.failures] == [jobs[2]] and "missing.jsonl" in str(e.value.failures[0])
    assert [j.completion_stats.successful_count for j in jobs] == [len(rows), len(rows), 0, len(rows)]
