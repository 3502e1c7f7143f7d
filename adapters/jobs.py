"""Background jobs (distillation, and anything else long) run by worker threads, one at a time by default.

Rules:
- A job belongs to the tenant that submitted it: `get` and `cancel` with another tenant raise `JobNotFoundError`,
  exactly as for an id that does not exist, so job ids never leak across tenants.
- Status moves one way: queued -> running -> succeeded | failed | cancelled, or queued -> cancelled.
- A job function gets a `JobContext`: it reports progress with `report(step, total, loss)` and checks
  `cancel_event` between steps. A job that raises after cancellation was asked for ends "cancelled"; one that
  returns ends "succeeded" even if cancellation came too late to stop it. Any other exception ends it "failed"
  with "ExceptionType: message", and is logged with its traceback.
- All state is behind one lock; `Job` values handed out are frozen snapshots. Worker threads start on the first
  `submit`; `close` cancels every unfinished job and joins the workers.
- At most `max_finished` finished jobs are remembered; the oldest finished ones are forgotten first.
- Queued jobs start round-robin over tenants (each tenant's in submission order): a tenant with many queued jobs
  delays another tenant's next job by at most one of its own per worker.
"""

from __future__ import annotations

import collections
import enum
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

logger = logging.getLogger(__name__)


class JobNotFoundError(KeyError):
    """No job with this id belongs to the tenant."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job {self.job_id!r}"


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobProgress:
    step: int
    total: int
    loss: float | None = None


@dataclass(frozen=True)
class Job:
    """A snapshot of one job. `result` is the function's return value once succeeded; `error` the failure."""

    id: str
    kind: str
    tenant: str
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: JobProgress | None = None
    result: object = None
    error: str | None = None


@dataclass(frozen=True)
class JobContext:
    """What a running job function sees: its cancel flag and a progress reporter."""

    job_id: str
    cancel_event: threading.Event
    report: Callable[..., None] = field(repr=False)

    @property
    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()


JobFunction = Callable[[JobContext], object]


class JobRunner:
    """Runs submitted job functions on `workers` threads, in submission order."""

    def __init__(self, workers: int = 1, max_finished: int = 1000, clock: Callable[[], float] = time.time) -> None:
        if workers < 1 or max_finished < 1:
            raise ValueError(f"workers and max_finished must be >= 1, not {workers} and {max_finished}")
        self._workers = workers
        self._max_finished = max_finished
        self._clock = clock
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._functions: dict[str, JobFunction] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._finished_ids: collections.deque[str] = collections.deque()  # in the order they finished
        self._queued: dict[str, collections.deque[str]] = {}  # tenant -> its queued job ids, oldest first
        self._turns: collections.deque[str] = collections.deque()  # tenants with queued jobs, next to start first
        self._available = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, kind: str, tenant: str, fn: JobFunction) -> Job:
        """Queue `fn` as a job of `tenant`; RuntimeError after `close`."""
        job = Job(secrets.token_hex(16), kind, tenant, JobStatus.QUEUED, self._clock())
        with self._lock:
            if self._closed:
                raise RuntimeError("the job runner is closed")
            self._jobs[job.id] = job
            self._functions[job.id] = fn
            self._cancels[job.id] = threading.Event()
            self._start_workers()
            self._queued.setdefault(tenant, collections.deque()).append(job.id)
            if tenant not in self._turns:
                self._turns.append(tenant)
            self._available.notify()
        return job

    def get(self, job_id: str, tenant: str) -> Job:
        with self._lock:
            return self._owned(job_id, tenant)

    def list(self, tenant: str) -> list[Job]:
        """The tenant's jobs in submission order."""
        with self._lock:
            return [job for job in self._jobs.values() if job.tenant == tenant]

    def active(self, tenant: str, kind: str | None = None) -> int:
        """How many of the tenant's jobs (of `kind`, if given) are queued or running."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.tenant == tenant and not job.status.is_finished
                       and kind in (None, job.kind))

    def cancel(self, job_id: str, tenant: str) -> Job:
        """Ask the job to stop: a queued job is cancelled at once, a running one at its next check; a finished job
        is left as it is. Returns the job as it is now."""
        with self._lock:
            job = self._owned(job_id, tenant)
            if job.status.is_finished:
                return job
            self._cancels[job_id].set()
            if job.status is JobStatus.QUEUED:
                job = self._finish(job, JobStatus.CANCELLED)
            return job

    def wait(self, job_id: str, tenant: str, timeout: float | None = None) -> Job:
        """The job once finished, or as it is when `timeout` seconds have passed."""
        with self._finished:
            self._owned(job_id, tenant)
            self._finished.wait_for(lambda: job_id not in self._jobs or self._jobs[job_id].status.is_finished,
                                    timeout)
            return self._owned(job_id, tenant)

    def close(self, timeout: float | None = None) -> None:
        """Cancel every unfinished job, stop the workers and join them."""
        with self._lock:
            self._closed = True
            for job in list(self._jobs.values()):
                if not job.status.is_finished:
                    self._cancels[job.id].set()
                    if job.status is JobStatus.QUEUED:
                        self._finish(job, JobStatus.CANCELLED)
            threads = list(self._threads)
            self._available.notify_all()
        for thread in threads:
            thread.join(timeout)

    def _owned(self, job_id: str, tenant: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.tenant != tenant:
            raise JobNotFoundError(job_id)
        return job

    def _start_workers(self) -> None:
        while len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, name=f"job-worker-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while (job_id := self._next_queued()) is not None:
            started = self._begin(job_id)
            if started is not None:
                self._run(*started)

    def _next_queued(self) -> str | None:
        """The next job to start, the tenants taking turns; None once the runner is closed."""
        with self._available:
            self._available.wait_for(lambda: self._closed or self._turns)
            if self._closed:
                return None
            tenant = self._turns.popleft()
            queued = self._queued[tenant]
            job_id = queued.popleft()
            if queued:
                self._turns.append(tenant)
            else:
                del self._queued[tenant]
            return job_id

    def _begin(self, job_id: str) -> tuple[Job, JobFunction, threading.Event] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            fn = self._functions.pop(job_id, None)
            if job is None or job.status is not JobStatus.QUEUED or fn is None:
                return None  # cancelled while queued, or forgotten
            job = self._set(replace(job, status=JobStatus.RUNNING, started_at=self._clock()))
            return job, fn, self._cancels[job_id]

    def _run(self, job: Job, fn: JobFunction, cancel: threading.Event) -> None:
        context = JobContext(job.id, cancel, lambda step, total, loss=None: self._report(job.id, step, total, loss))
        try:
            result = fn(context)
        except BaseException as error:  # a job's failure is recorded, never lost
            with self._lock:
                if cancel.is_set():
                    self._finish(self._jobs[job.id], JobStatus.CANCELLED)
                else:
                    logger.exception("job %s (%s of tenant %s) failed", job.id, job.kind, job.tenant)
                    self._finish(self._jobs[job.id], JobStatus.FAILED, error=f"{type(error).__name__}: {error}")
            if not isinstance(error, Exception):
                raise
            return
        with self._lock:
            self._finish(self._jobs[job.id], JobStatus.SUCCEEDED, result=result)

    def _report(self, job_id: str, step: int, total: int, loss: float | None) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobStatus.RUNNING:
                self._set(replace(job, progress=JobProgress(step, total, loss)))

    def _finish(self, job: Job, status: JobStatus, result: object = None, error: str | None = None) -> Job:
        job = self._set(replace(job, status=status, finished_at=self._clock(), result=result, error=error))
        self._functions.pop(job.id, None)
        self._finished_ids.append(job.id)
        self._forget_oldest_finished()
        self._finished.notify_all()
        return job

    def _set(self, job: Job) -> Job:
        self._jobs[job.id] = job
        return job

    def _forget_oldest_finished(self) -> None:
        while len(self._finished_ids) > self._max_finished:
            job_id = self._finished_ids.popleft()
            del self._jobs[job_id]
            del self._cancels[job_id]
