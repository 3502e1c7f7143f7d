"""The job runner: results, failures, cancellation, progress and tenant isolation, with real worker threads."""

from __future__ import annotations

import threading

import pytest

from adapters.jobs import Job, JobContext, JobNotFoundError, JobProgress, JobRunner, JobStatus

TIMEOUT = 10


@pytest.fixture
def runner():
    jobs = JobRunner()
    yield jobs
    jobs.close(timeout=TIMEOUT)


def blocking_job(started: threading.Event, release: threading.Event, steps: int = 1000):
    """A job that reports step 1, signals `started`, then steps until cancelled or `release` is set."""
    def fn(context: JobContext) -> str:
        context.report(1, steps, 2.5)
        started.set()
        for _step in range(steps):
            if context.is_cancelled:
                raise RuntimeError("stopped on request")
            if release.wait(0.01):
                return "released"
        return "ran out"
    return fn


def test_a_job_succeeds_with_its_result_and_times(runner):
    job = runner.submit("distill", "tenant-a", lambda context: {"steps": 3})
    assert job.status is JobStatus.QUEUED and len(job.id) == 32 and int(job.id, 16) >= 0
    done = runner.wait(job.id, "tenant-a", TIMEOUT)
    assert done.status is JobStatus.SUCCEEDED and done.result == {"steps": 3} and done.error is None
    assert done.created_at <= done.started_at <= done.finished_at
    assert runner.submit("distill", "tenant-a", lambda context: None).id != job.id


def test_a_failure_keeps_the_exception_message(runner, caplog):
    def fail(context):
        raise ValueError("rank 99 is over the limit")

    done = runner.wait(runner.submit("distill", "tenant-a", fail).id, "tenant-a", TIMEOUT)
    assert done.status is JobStatus.FAILED and done.error == "ValueError: rank 99 is over the limit"
    assert done.result is None
    assert "failed" in caplog.text and "rank 99" in caplog.text


def test_progress_is_visible_while_running_and_cancel_stops_the_job(runner):
    started, release = threading.Event(), threading.Event()
    job = runner.submit("distill", "tenant-a", blocking_job(started, release))
    assert started.wait(TIMEOUT)
    running = runner.get(job.id, "tenant-a")
    assert running.status is JobStatus.RUNNING and running.progress == JobProgress(1, 1000, 2.5)
    assert runner.cancel(job.id, "tenant-a").status is JobStatus.RUNNING  # stops at its next check
    done = runner.wait(job.id, "tenant-a", TIMEOUT)
    assert done.status is JobStatus.CANCELLED and done.error is None and done.finished_at is not None


def test_jobs_run_one_at_a_time_and_a_queued_job_cancels_at_once(runner):
    started, release = threading.Event(), threading.Event()
    first = runner.submit("distill", "tenant-a", blocking_job(started, release))
    ran = threading.Event()
    second = runner.submit("distill", "tenant-a", lambda context: ran.set())
    third = runner.submit("distill", "tenant-a", lambda context: "third")
    assert started.wait(TIMEOUT)
    assert runner.get(second.id, "tenant-a").status is JobStatus.QUEUED
    assert runner.cancel(second.id, "tenant-a").status is JobStatus.CANCELLED
    release.set()
    assert runner.wait(first.id, "tenant-a", TIMEOUT).result == "released"
    assert runner.wait(third.id, "tenant-a", TIMEOUT).result == "third"
    assert not ran.is_set()
    assert [j.id for j in runner.list("tenant-a")] == [first.id, second.id, third.id]


def test_queued_jobs_start_round_robin_over_tenants(runner):
    started, release, order = threading.Event(), threading.Event(), []
    first = runner.submit("distill", "tenant-a", blocking_job(started, release))
    assert started.wait(TIMEOUT)
    jobs = [runner.submit("distill", tenant, lambda context, name=name: order.append(name))
            for tenant, name in (("tenant-a", "a2"), ("tenant-a", "a3"), ("tenant-a", "a4"), ("tenant-b", "b1"),
                                 ("tenant-c", "c1"), ("tenant-b", "b2"))]
    release.set()
    runner.wait(first.id, "tenant-a", TIMEOUT)
    for job in jobs:
        runner.wait(job.id, job.tenant, TIMEOUT)
    assert order == ["a2", "b1", "c1", "a3", "b2", "a4"]  # tenant-a's backlog delays the others by one job each
    assert runner.active("tenant-a") == 0


def test_a_late_cancel_leaves_a_finished_job_as_it_was(runner):
    job = runner.submit("distill", "tenant-a", lambda context: 7)
    done = runner.wait(job.id, "tenant-a", TIMEOUT)
    assert runner.cancel(job.id, "tenant-a") == done


def test_another_tenants_job_is_not_found(runner):
    job = runner.submit("distill", "tenant-a", lambda context: "secret")
    runner.wait(job.id, "tenant-a", TIMEOUT)
    for call in (runner.get, runner.cancel, runner.wait):
        with pytest.raises(JobNotFoundError, match=f"no job '{job.id}'"):
            call(job.id, "tenant-b")
    with pytest.raises(KeyError):
        runner.get("0" * 32, "tenant-a")
    assert runner.list("tenant-b") == []
    assert runner.get(job.id, "tenant-a").result == "secret"


def test_close_cancels_unfinished_jobs_and_refuses_new_ones():
    runner = JobRunner()
    started, release = threading.Event(), threading.Event()
    running = runner.submit("distill", "tenant-a", blocking_job(started, release))
    queued = runner.submit("distill", "tenant-a", lambda context: "never")
    assert started.wait(TIMEOUT)
    runner.close(timeout=TIMEOUT)
    assert runner.get(running.id, "tenant-a").status is JobStatus.CANCELLED
    assert runner.get(queued.id, "tenant-a").status is JobStatus.CANCELLED
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit("distill", "tenant-a", lambda context: None)


def test_only_the_newest_finished_jobs_are_remembered():
    runner = JobRunner(max_finished=2)
    try:
        ids = [runner.wait(runner.submit("k", "t", lambda context, i=i: i).id, "t", TIMEOUT).id for i in range(4)]
        assert [j.id for j in runner.list("t")] == ids[2:]
        with pytest.raises(JobNotFoundError):
            runner.get(ids[0], "t")
    finally:
        runner.close(timeout=TIMEOUT)


def test_jobs_are_frozen_snapshots(runner):
    job = runner.submit("distill", "tenant-a", lambda context: None)
    assert isinstance(job, Job)
    with pytest.raises(AttributeError):
        job.status = JobStatus.FAILED  # type: ignore[misc]
    with pytest.raises(ValueError, match="workers"):
        JobRunner(workers=0)


def test_a_distillation_job_reports_progress_and_cancels_through_its_event(runner, tiny_model, tmp_path):
    from adapters.distill import DistillSpec, distill
    from adapters.examples import Example

    examples = [Example(question=f"q{i}?", answer=f"a{i}.") for i in range(4)]
    spec = DistillSpec(tiny_model, tmp_path / "adapter", examples, max_steps=3, learning_rate=1e-2)
    done = runner.wait(runner.submit("distill", "tenant-a", lambda context: distill(
        spec, on_progress=context.report, cancel=context.cancel_event)).id, "tenant-a", 120)
    assert done.status is JobStatus.SUCCEEDED and done.result.steps == 3
    assert done.progress == JobProgress(3, 3, done.result.last_loss)

    def cancel_after_first_step(context: JobContext):
        def report(step, total, loss):
            context.report(step, total, loss)
            runner.cancel(context.job_id, "tenant-a")
        return distill(DistillSpec(tiny_model, tmp_path / "cancelled", examples, epochs=50), on_progress=report,
                       cancel=context.cancel_event)

    done = runner.wait(runner.submit("distill", "tenant-a", cancel_after_first_step).id, "tenant-a", 120)
    assert done.status is JobStatus.CANCELLED and done.progress.step == 1
    assert not (tmp_path / "cancelled").exists()
