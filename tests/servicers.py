"""A test servicer for JobService and BigQueryRead whose behaviour is chosen by the request's names.

``.../batchPredictionJobs/err-NOT_FOUND`` raises that code, ``abort-INVALID_ARGUMENT`` aborts through the
context, ``flaky-2-<id>`` fails twice with UNAVAILABLE then succeeds, ``slow`` sleeps, ``hint`` fails with a
RetryInfo detail. Read streams ``.../streams/N`` yield N responses; ``broken-N`` fails after N.
"""

from __future__ import annotations

import collections
import threading
import time

from bpj import errors, types
from bpj._gen.services.big_query_read import BigQueryReadServicer
from bpj._gen.services.job_service import JobServiceServicer

PARENT = "projects/p/locations/us-central1"


def job_name(job_id: str) -> str:
    return f"{PARENT}/batchPredictionJobs/{job_id}"


def stream_name(stream_id: str) -> str:
    return f"{PARENT}/sessions/s1/streams/{stream_id}"


class Jobs(JobServiceServicer):
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.metadata: list[tuple[tuple[str, str], ...]] = []
        self._lock = threading.Lock()

    def _count(self, key: str) -> int:
        with self._lock:
            self.calls[key] += 1
            return self.calls[key]

    def GetBatchPredictionJob(self, request, context):
        self.metadata.append(tuple(context.invocation_metadata()))
        job_id = request.name.rsplit("/", 1)[-1]
        n = self._count(request.name)
        if job_id.startswith("err-"):
            code = errors.Code[job_id.removeprefix("err-")]
            raise errors.error_class(code)(f"{code.name.lower()} for {job_id}")
        if job_id.startswith("abort-"):
            context.abort(errors.Code[job_id.removeprefix("abort-")], f"aborted {job_id}")
        if job_id.startswith("flaky-"):
            failures = int(job_id.split("-")[1])
            if n <= failures:
                raise errors.Unavailable(f"try again ({n})")
        if job_id == "slow":
            time.sleep(1.5)
        if job_id == "hint":
            raise errors.ResourceExhausted(
                "quota",
                details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.050s"}],
            )
        return types.BatchPredictionJob(
            name=request.name,
            display_name=f"job {job_id}",
            state=types.JobState.JOB_STATE_RUNNING,
            labels={"team": "bpj"},
        )

    def CreateBatchPredictionJob(self, request, context):
        self._count("create")
        if request.batch_prediction_job.display_name == "unavailable":
            raise errors.Unavailable("backend restarting")
        job = types.BatchPredictionJob()
        job.CopyFrom(request.batch_prediction_job)
        job.name = f"{request.parent}/batchPredictionJobs/123"
        job.state = types.JobState.JOB_STATE_PENDING
        return job

    def ListBatchPredictionJobs(self, request, context):
        size = request.page_size or 3
        start = int(request.page_token or 0)
        jobs = [
            types.BatchPredictionJob(
                name=f"{request.parent}/batchPredictionJobs/{i}", display_name=request.filter
            )
            for i in range(start, min(start + size, 7))
        ]
        token = str(start + size) if start + size < 7 else ""
        return types.ListBatchPredictionJobsResponse(batch_prediction_jobs=jobs, next_page_token=token)

    def CancelBatchPredictionJob(self, request, context):
        self._count("cancel:" + request.name)
        return types.Empty()


class Reads(BigQueryReadServicer):
    def __init__(self) -> None:
        self.finished = threading.Event()

    def ReadRows(self, request, context):
        stream_id = request.read_stream.rsplit("/", 1)[-1]
        broken = stream_id.startswith("broken-")
        count = int(stream_id.removeprefix("broken-"))
        try:
            for i in range(request.offset, count):
                yield types.ReadRowsResponse(
                    row_count=i + 1,
                    arrow_record_batch=types.ArrowRecordBatch(serialized_record_batch=bytes([i % 256]) * 10),
                )
            if broken:
                raise errors.Unavailable(f"stream {stream_id} reset")
        finally:
            self.finished.set()

    def CreateReadSession(self, request, context):
        return types.ReadSession(
            name=f"{PARENT}/sessions/s1",
            table=request.read_session.table,
            data_format=types.DataFormat.ARROW,
            streams=[
                types.ReadStream(name=stream_name(str(i))) for i in range(request.max_stream_count or 1)
            ],
        )
