"""The tier scheduler's executor: collect objects from the reporters, plan, carry the moves out, in the background.

Rules:
- one pass at a time (a lock), in plan order: moves down first, so room is freed before it is used;
- each move goes to the reporter of its kind; a move that fails is logged with its context and counted
  (`outcome="failed"`), never swallowed, and the pass goes on with the next move. The next pass re-observes the
  state, so a failed move is planned again if it is still needed;
- the state after a pass is the observed objects with the successful moves applied (`planner.apply`): what the
  budgets were planned against. Between passes the memory packages still load on demand (a request loads its
  adapter, a search its tenant's index), so usage may exceed a budget for up to one interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from memcore.value import ValueModel
from sidecar.scheduler.objects import Budgets, Kind, MemoryObject, Move, Usage, usage
from sidecar.scheduler.planner import apply, plan

log = logging.getLogger("memsidecar.tiers")
RECENT_MOVES = 50


class Reporter(Protocol):
    """One memory package as the scheduler sees it: its objects now, and how to move one of them.

    Async because moving an adapter is a call to the engine; reporters of blocking stores run their work in a
    thread so the event loop never waits on LMDB or FAISS."""

    kind: Kind

    async def objects(self, now: float) -> list[MemoryObject]:
        """Every object of this package (including pinned reservations), with times on the scheduler's clock."""

    async def apply(self, move: Move) -> None:
        """Carry out `move` or raise; an unsupported move raises ValueError."""


@dataclass(frozen=True)
class FailedMove:
    move: Move
    error: str


@dataclass(frozen=True)
class Pass:
    """One collect-plan-apply pass: what was observed, planned, failed, and the state it left."""

    started_at: float
    seconds: float
    observed: tuple[MemoryObject, ...]
    moves: tuple[Move, ...]
    failed: tuple[FailedMove, ...]
    after: tuple[MemoryObject, ...]

    @property
    def usage_after(self) -> Usage:
        return usage(self.after)


class Scheduler:
    """Owns the budgets; the reporters report to it and carry out its moves."""

    def __init__(self, reporters: Sequence[Reporter], budgets: Budgets, model: ValueModel | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        kinds = [reporter.kind for reporter in reporters]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"one reporter per kind; got {[kind.value for kind in kinds]}")
        self.reporters = {reporter.kind: reporter for reporter in reporters}
        self.budgets = budgets
        self.model = model or ValueModel()
        self.clock = clock
        self.last: Pass | None = None
        self.recent: list[Move] = []  # the last RECENT_MOVES moves carried out, oldest first
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (action, kind, outcome) -> moves
        self.passes = 0
        self._lock = asyncio.Lock()

    async def run_once(self) -> Pass:
        """Collect, plan and apply once; returns the pass (also kept as `last`)."""
        async with self._lock:
            started, clock_start = time.perf_counter(), self.clock()
            observed = await self._collect(clock_start)
            moves = plan(observed, self.budgets, clock_start, self.model)
            failed = [failure for move in moves if (failure := await self._execute(move)) is not None]
            failed_moves = {failure.move for failure in failed}
            after = apply(observed, [move for move in moves if move not in failed_moves])
            self.last = Pass(clock_start, time.perf_counter() - started, tuple(observed), tuple(moves),
                             tuple(failed), tuple(after))
            self.passes += 1
            return self.last

    async def run_forever(self, interval_s: float) -> None:
        """A pass every `interval_s` seconds until cancelled; a pass that fails is logged and retried next time."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass is retried next interval; logged, never swallowed silently
                log.exception("tier scheduler pass failed")
            await asyncio.sleep(interval_s)

    async def _collect(self, now: float) -> list[MemoryObject]:
        objects: list[MemoryObject] = []
        for kind, reporter in self.reporters.items():
            found = await reporter.objects(now)
            strays = [obj.key for obj in found if obj.kind is not kind]
            if strays:
                raise ValueError(f"the {kind.value} reporter returned objects of another kind: {strays[:3]}")
            objects += found
        return objects

    async def _execute(self, move: Move) -> FailedMove | None:
        try:
            await self.reporters[move.kind].apply(move)
        except Exception as error:  # one failed move must not stop the others; counted and logged
            log.exception("tier move failed: %s %s %s from %s to %s (%s)", move.action.value, move.kind.value,
                          move.key, move.src.label, move.dst.label if move.dst else "gone", move.reason)
            self.counts[(move.action.value, move.kind.value, "failed")] += 1
            return FailedMove(move, f"{type(error).__name__}: {error}"[:300])
        log.info("tier move: %s %s %s from %s to %s (%s)", move.action.value, move.kind.value, move.key,
                 move.src.label, move.dst.label if move.dst else "gone", move.reason)
        self.counts[(move.action.value, move.kind.value, "done")] += 1
        self.recent = (self.recent + [move])[-RECENT_MOVES:]
        return None

    def report(self) -> dict[str, Any]:
        """Budgets, usage per tier after the last pass, and recent moves, for `GET /v1/tiers`. Names no objects:
        any tenant may read it, and keys name tenants and adapters."""
        budgets = self.budgets
        result: dict[str, Any] = {
            "budgets": {"engine_bytes": budgets.engine_bytes, "cpu_bytes": budgets.cpu_bytes,
                        "disk_bytes": budgets.disk_bytes, "adapter_slots": budgets.adapter_slots},
            "passes": self.passes,
            "moves_total": [{"action": a, "kind": k, "outcome": o, "count": n}
                            for (a, k, o), n in sorted(self.counts.items())],
            "recent_moves": [_move_json(move) for move in self.recent],
        }
        last = self.last
        if last is not None:
            result["last_pass"] = {
                "started_at": last.started_at, "seconds": round(last.seconds, 4),
                "objects": dict(Counter(f"{obj.kind.value}/{obj.tier.label}" for obj in last.after)),
                "usage": _usage_json(last.usage_after), "usage_observed": _usage_json(usage(last.observed)),
                "moves": [_move_json(move) for move in last.moves],
                "failed": [{**_move_json(f.move), "error": f.error} for f in last.failed],
            }
        return result


def _move_json(move: Move) -> dict[str, Any]:
    return {"action": move.action.value, "kind": move.kind.value, "src": move.src.label,
            "dst": move.dst.label if move.dst is not None else None, "reason": move.reason}


def _usage_json(figures: Usage) -> dict[str, int]:
    return {"engine_bytes": figures.engine_bytes, "cpu_bytes": figures.cpu_bytes, "disk_bytes": figures.disk_bytes,
            "loaded_adapters": figures.loaded_adapters}
