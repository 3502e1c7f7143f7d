"""Prometheus metrics of one sidecar, in a registry of its own (no process-global state)."""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from memcore.tiers import Tier
from sidecar.chat.extraction import MemoryExtractor
from sidecar.engine.adapters import AdapterService
from sidecar.engine.process import Engine
from sidecar.scheduler.executor import Scheduler
from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import Resource
from textual.errors import StoreUnavailableError

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _EngineCollector:
    """Reads the engine's state at scrape time, so the numbers never drift from the supervisor's own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        ready = GaugeMetricFamily("memsidecar_engine_ready", "1 when the engine answers its health check.")
        ready.add_metric([], 1.0 if self.engine.is_ready else 0.0)
        restarts = CounterMetricFamily("memsidecar_engine_restarts", "Times the engine was restarted after dying.")
        restarts.add_metric([], float(self.engine.restart_count))
        return [ready, restarts]


class _TierCollector:
    """The tier scheduler's budgets, the usage its last pass left, and its moves, read at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self):
        budget = GaugeMetricFamily("memsidecar_tier_budget_bytes", "The tier scheduler's byte budget per tier.",
                                   labels=["tier"])
        used = GaugeMetricFamily("memsidecar_tier_usage_bytes",
                                 "Bytes held per tier after the tier scheduler's last pass.", labels=["tier"])
        last = self.scheduler.last
        for tier in Tier:
            budget.add_metric([tier.label], float(self.scheduler.budgets.of(tier)))
            if last is not None:
                used.add_metric([tier.label], float(last.usage_after.of(tier)))
        moves = CounterMetricFamily("memsidecar_tier_moves", "Tier moves carried out (done) or failed, by action "
                                    "(promote, demote, evict, prefetch) and kind of object.",
                                    labels=["action", "kind", "outcome"])
        for (action, kind, outcome), count in sorted(self.scheduler.counts.items()):
            moves.add_metric([action, kind, outcome], float(count))
        return [budget, used, moves]


class _ExtractionCollector:
    """Memory extractions through the engine by outcome, and the memories their answers held, read at scrape time."""

    def __init__(self, extractor: MemoryExtractor) -> None:
        self.extractor = extractor

    def collect(self):
        runs = CounterMetricFamily("memsidecar_memory_extractions", "Memory extractions through the engine: done, or "
                                   "failed (engine error, timeout, internal fault).", labels=["outcome"])
        for outcome in ("done", "failed"):
            runs.add_metric([outcome], float(self.extractor.runs[outcome]))
        items = CounterMetricFamily("memsidecar_extracted_memories", "Items of extraction answers: stored (merged "
                                    "ones included), or dropped as invalid (a malformed answer counts one).",
                                    labels=["outcome"])
        for outcome in ("stored", "dropped"):
            items.add_metric([outcome], float(self.extractor.memories[outcome]))
        return [runs, items]


class _AdapterCollector:
    """Adapter unloads by whether the engine freed the weights, read at scrape time."""

    def __init__(self, service: AdapterService) -> None:
        self.service = service

    def collect(self):
        unloads = CounterMetricFamily("memsidecar_adapter_unloads", "Adapter unloads: released (the engine no longer "
                                      "holds the weights), unreleased (it still does), unverified (an engine without "
                                      "the release middleware).", labels=["outcome"])
        for outcome in ("released", "unreleased", "unverified"):
            unloads.add_metric([outcome], float(self.service.releases[outcome]))
        return [unloads]


class _MemoryStoreCollector:
    """Whether the textual-memory store answers, read at scrape time (`MemoryStore.outage`)."""

    def __init__(self, outage: Callable[[], str | None]) -> None:
        self.outage = outage

    def collect(self):
        ready = GaugeMetricFamily("memsidecar_memory_store_ready", "1 when the textual-memory store can be reached "
                                  "(0: memory reads of unloaded tenants and all memory writes fail with 503).")
        ready.add_metric([], 1.0 if self.outage() is None else 0.0)
        return [ready]


class _QuotaCollector:
    """Each configured tenant's usage of its quotas, the limits, and the refusals so far, read at scrape time."""

    def __init__(self, book: QuotaBook, tenants: list[str]) -> None:
        self.book = book
        self.tenants = tenants

    def collect(self):
        usage = GaugeMetricFamily("memsidecar_tenant_usage", "What a tenant uses of each quota-limited resource.",
                                  labels=["tenant", "resource"])
        limit = GaugeMetricFamily("memsidecar_tenant_limit", "Every tenant's limit per resource (0: unlimited).",
                                  labels=["resource"])
        refusals = CounterMetricFamily("memsidecar_quota_refusals", "Requests refused because a tenant was at a "
                                       "quota, by tenant and resource.", labels=["tenant", "resource"])
        for resource in Resource:
            limit.add_metric([resource.value], float(self.book.limits.of(resource)))
            for tenant in self.tenants:
                try:
                    used = self.book.used(tenant, resource)
                except StoreUnavailableError:  # unknown while the memory store is away (memory_store_ready says so)
                    continue
                usage.add_metric([tenant, resource.value], float(used))
        for (tenant, resource), count in sorted(self.book.refusals.items()):
            refusals.add_metric([tenant, resource], float(count))
        return [usage, limit, refusals]


class Metrics:
    """Request counts and latencies per route, plus the engine's state and, given a scheduler, the tiers', given an
    extractor, its extractions, given an adapter service, its unloads, given a quota book and the tenants, their
    quota usage and refusals, and given the memory store's `outage`, whether it answers."""

    def __init__(self, engine: Engine, scheduler: Scheduler | None = None,
                 extractor: MemoryExtractor | None = None, adapters: AdapterService | None = None,
                 quotas: tuple[QuotaBook, list[str]] | None = None,
                 memory_outage: Callable[[], str | None] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "memsidecar_requests", "HTTP requests by route, method and status.", ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memsidecar_request_duration_seconds", "Time from request to the end of the response, by route.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))
        if scheduler is not None:
            self.registry.register(_TierCollector(scheduler))
        if extractor is not None:
            self.registry.register(_ExtractionCollector(extractor))
        if adapters is not None:
            self.registry.register(_AdapterCollector(adapters))
        if quotas is not None:
            self.registry.register(_QuotaCollector(*quotas))
        if memory_outage is not None:
            self.registry.register(_MemoryStoreCollector(memory_outage))

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
