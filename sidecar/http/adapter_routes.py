"""REST routes of parametric memory: upload, list, delete, load/unload/pin, bindings, distillation jobs.

Routes translate HTTP to calls on `AdapterService`, `AdapterRegistry` and `JobRunner`, always with the caller's
tenant; registry and validation errors carry their own status (400/404/413/422) and field.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from adapters.distill import DistillSpec, distill
from adapters.examples import Example, examples_from_records
from adapters.jobs import Job, JobContext, JobRunner
from adapters.record import AdapterRecord
from sidecar.engine.adapters import AdapterService
from sidecar.http.access import Caller
from sidecar.http.errors import APIError
from sidecar.http.memory_schema import ID_REGEX
from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import Resource
from textual.store import MemoryStore

NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
REFERENCE_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(@v[1-9][0-9]{0,8})?$"  # name, or name@vN for one version
JOB_ID_REGEX = r"^[0-9a-f]{32}$"
MAX_VERSION = 10 ** 9
AdapterName = Annotated[str, PathParam(pattern=NAME_REGEX, description="An adapter's name.")]
AdapterReference = Annotated[str, PathParam(pattern=REFERENCE_REGEX, description="`name`, or `name@vN`.")]
JobId = Annotated[str, PathParam(pattern=JOB_ID_REGEX, description="A job's id.")]
MEMORY_TYPES_FOR_DISTILLATION = ["fact", "preference", "event", "episode"]


class Binding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: StrictStr | None = Field(None, pattern=ID_REGEX, description="Bind for this user; unset: the tenant.")
    version: StrictInt | None = Field(None, ge=1, le=MAX_VERSION,
                                      description="Stay on this version; unset: follow the latest.")


ModuleName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class TrainingExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr | None = Field(None, min_length=1, max_length=20_000)
    question: StrictStr | None = Field(None, min_length=1, max_length=20_000)
    answer: StrictStr | None = Field(None, min_length=1, max_length=20_000)
    fact: StrictStr | None = Field(None, min_length=1, max_length=20_000,
                                   description="A fact about the user, trained as questions the base model writes.")


class DistillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(pattern=NAME_REGEX, description="Name of the adapter to register (a new version).")
    user_id: StrictStr | None = Field(None, pattern=ID_REGEX, description="Train on this user's memories.")
    examples: list[TrainingExample] | None = Field(None, min_length=1, max_length=10_000)
    rank: StrictInt = Field(8, ge=1, le=256)
    epochs: StrictInt = Field(8, ge=1, le=100)
    max_steps: StrictInt | None = Field(None, ge=1, le=100_000)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    source: Literal["memories", "examples"] = "examples"
    target_modules: list[ModuleName] = Field(
        ["q_proj", "v_proj"], min_length=1, max_length=16,
        description='Module names to train, or ["all-linear"] (PEFT: every linear layer but the output head).')


def record_json(record: AdapterRecord, service: AdapterService) -> dict[str, Any]:
    return {
        "id": record.name, "name": record.name, "version": record.version, "reference": record.reference,
        "owner": "public" if record.is_public else record.owner, "rank": record.rank, "alpha": record.alpha,
        "target_modules": list(record.target_modules), "bytes": record.bytes, "sha256": record.sha256,
        "created_at": record.created_at, "last_used_at": record.last_used_at,
        "residency": service.tier_of(record), "pinned": service.is_pinned(record),
    }


def job_json(job: Job) -> dict[str, Any]:
    progress = job.progress
    return {"id": job.id, "kind": job.kind, "status": job.status.value, "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at, "error": job.error,
            "progress": None if progress is None else {"step": progress.step, "total": progress.total,
                                                         "loss": progress.loss},
            "result": job.result if isinstance(job.result, dict) else None}


def adapter_router(service: AdapterService, jobs: JobRunner, store: MemoryStore, base_model_dir: Path,
                   work_dir: Path, max_upload_bytes: int, caller, book: QuotaBook) -> APIRouter:
    """The `/v1/adapters` routes; uploads are raw zip or tar bodies of up to `max_upload_bytes`, within the
    tenant's adapter quotas (`book`)."""
    router = APIRouter(prefix="/v1/adapters", tags=["adapters"])
    registry = service.registry

    @router.post("")
    async def upload(request: Request, name: str = Query(pattern=NAME_REGEX),
                     who: Caller = Depends(caller)) -> dict:
        data = await request.body()
        if not data:
            raise APIError(400, "the body must be the adapter as a zip or tar archive", "empty_upload")
        book.check_adapter_upload(who.tenant, len(data))
        record = await run_in_threadpool(registry.register_archive, data, name, who.tenant)
        return record_json(record, service)

    @router.get("")
    async def list_adapters(who: Caller = Depends(caller)) -> dict:
        return {"data": [record_json(r, service) for r in await run_in_threadpool(registry.list, who.tenant)]}

    _add_distillation_routes(router, service, jobs, store, base_model_dir, work_dir, caller, book)

    @router.get("/{name}")
    async def get_adapter(name: AdapterName, who: Caller = Depends(caller)) -> dict:
        versions = await run_in_threadpool(registry.versions, name, who.tenant)
        return {**record_json(versions[-1], service), "versions": [record_json(r, service) for r in versions]}

    @router.delete("/{name}")
    async def delete_adapter(name: AdapterName, version: int | None = Query(None, ge=1, le=MAX_VERSION),
                             who: Caller = Depends(caller)) -> dict:
        doomed = [r for r in await run_in_threadpool(registry.versions, name, who.tenant)
                  if version in (None, r.version)]
        await service.forget([r for r in doomed if not r.is_public])
        deleted = await run_in_threadpool(registry.delete, name, who.tenant, version)
        return {"name": name, "deleted": [r.reference for r in deleted]}

    @router.post("/{name}/{action}")
    async def residency(name: AdapterReference, action: Literal["load", "unload", "pin", "unpin"],
                        who: Caller = Depends(caller)) -> dict:
        """Load or unload now, or pin (keep loaded) or unpin, the adapter `name` (`name@vN` for one version)."""
        record = await run_in_threadpool(service.resolve, name, who.tenant)
        if action in ("load", "unload"):
            await (service.load if action == "load" else service.unload)(record)
        else:
            if action == "pin" and not service.is_pinned(record):
                book.check(who.tenant, Resource.PINNED_ADAPTERS)
            await service.set_pinned(record, action == "pin", who.tenant)
        return record_json(record, service)

    @router.put("/{name}/binding")
    async def bind(name: AdapterName, body: Binding, who: Caller = Depends(caller)) -> dict:
        record = await run_in_threadpool(registry.bind, who.tenant, name, body.user_id, body.version)
        return {"user_id": body.user_id, "adapter": record.reference, "follows_latest": body.version is None}

    @router.delete("/{name}/binding")
    async def unbind(name: AdapterName, user_id: str | None = Query(None, pattern=ID_REGEX),
                     who: Caller = Depends(caller)) -> dict:
        bound = await run_in_threadpool(registry.binding_for, who.tenant, user_id)
        if bound is None or bound.name != name:
            raise APIError(404, f"no binding to adapter {name!r} for this {'user' if user_id else 'tenant'}",
                           "not_found")
        await run_in_threadpool(registry.unbind, who.tenant, user_id)
        return {"user_id": user_id, "adapter": None}

    return router


def _add_distillation_routes(router: APIRouter, service: AdapterService, jobs: JobRunner, store: MemoryStore,
                             base_model_dir: Path, work_dir: Path, caller, book: QuotaBook) -> None:
    """`POST /distill` (a background job: train, register, load), within the tenant's job and adapter quotas, and
    the job routes."""
    registry = service.registry

    @router.post("/distill", status_code=202)
    async def start_distillation(body: DistillRequest, who: Caller = Depends(caller)) -> dict:
        examples = await run_in_threadpool(_examples, body, store, who.tenant)
        loop = asyncio.get_running_loop()

        def run(context: JobContext) -> dict:
            output = work_dir / context.job_id
            spec = DistillSpec(base_model_dir=base_model_dir, output_dir=output, examples=examples, rank=body.rank,
                               alpha=2.0 * body.rank, epochs=body.epochs, max_steps=body.max_steps,
                               learning_rate=body.learning_rate, target_modules=tuple(body.target_modules))
            try:
                result = distill(spec, context.report, context.cancel_event)
                record = registry.register_directory(output, body.name, who.tenant)
            finally:
                shutil.rmtree(output, ignore_errors=True)
            asyncio.run_coroutine_threadsafe(service.load(record), loop).result(timeout=300)
            return {"adapter": record.reference, "steps": result.steps, "first_loss": result.first_loss,
                    "last_loss": result.last_loss, "seconds": result.seconds, "examples": result.examples}

        book.check(who.tenant, Resource.DISTILL_JOBS)  # checked and submitted with no await between: atomic
        book.check(who.tenant, Resource.ADAPTERS, 1 + jobs.active(who.tenant, "distill"))
        return job_json(jobs.submit("distill", who.tenant, run))

    @router.get("/jobs")
    async def list_jobs(who: Caller = Depends(caller)) -> dict:
        return {"data": [job_json(job) for job in jobs.list(who.tenant)]}

    @router.get("/jobs/{job_id}")
    async def get_job(job_id: JobId, who: Caller = Depends(caller)) -> dict:
        return job_json(_job(jobs.get, job_id, who.tenant))

    @router.post("/jobs/{job_id}/cancel")
    async def cancel_job(job_id: JobId, who: Caller = Depends(caller)) -> dict:
        return job_json(_job(jobs.cancel, job_id, who.tenant))


def _examples(body: DistillRequest, store: MemoryStore, tenant: str) -> tuple[Example, ...]:
    if body.source == "examples":
        if not body.examples:
            raise APIError(400, "examples: give training examples, or set source to memories", param="examples")
        return tuple(Example(text=e.text, question=e.question, answer=e.answer, fact=e.fact) for e in body.examples)
    if body.user_id is None:
        raise APIError(400, "user_id: name whose memories to distil", param="user_id")
    memories = store.for_tenant(tenant).list(user=body.user_id, types=MEMORY_TYPES_FOR_DISTILLATION, limit=10_000)
    examples = examples_from_records(memories)
    if not examples:
        raise APIError(400, f"user_id: user {body.user_id!r} has no memories to distil", param="user_id")
    return examples


def _job(method, job_id: str, tenant: str) -> Job:
    try:
        return method(job_id, tenant)
    except KeyError:
        raise APIError(404, f"no job {job_id!r}", "not_found") from None
