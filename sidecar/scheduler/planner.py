"""The tier planner: pure functions from objects and budgets to moves (no I/O), property-tested.

Order of work: unload the least valuable unpinned adapters while more are loaded than there are adapter slots
(which ones: `adapters.residency.unload_order`, the rule the request path's residency plans use too);
then, fastest tier first, demote the lowest-density unpinned objects of every tier over its byte budget to the
tier below (ENGINE -> CPU -> DISK); evict the lowest-density unpinned evictable objects while the disk is over its
budget; finally move valuable objects up into free room (`ValueModel.prefetch_fill` of a budget at most), fastest
tier first, never displacing anything. Density is `MemoryObject.density` in the bytes of the tier in question.

Invariants (checked by `tests/sidecar/scheduler/test_planner.py` on random states):
- budgets: after `apply(objects, plan(...))` every tier is within its byte budget and the loaded adapters within
  the slots, unless what is left above the budget cannot move (pinned objects; on the disk also the objects that
  are not evictable);
- pins: a pinned object never moves down (nor up: pinned means the scheduler leaves it where it is);
- value order: when an object leaves ENGINE or CPU for lack of bytes, no unpinned object of lower density stays in
  that tier; when one is evicted, no unpinned evictable object of lower disk density that holds disk bytes is left;
  when an adapter is unloaded for lack of slots, no unpinned loaded adapter that saves fewer seconds stays loaded.
  ("Stays in the same tier", not "the same or a higher one": an object in a higher tier does not hold the bytes of
  the tier being trimmed, and demoting it would only add to them.) Moves up never put an object of lower density
  where one of higher density was moved out of;
- one move per object (its start and end tier), downward moves first, so an executor frees room before using it;
  moves up stay within each object's `ceiling`; deterministic (ties broken by key).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from adapters.residency import AdapterState, unload_order
from memcore.tiers import Tier
from memcore.value import ValueModel
from sidecar.scheduler.objects import Action, Budgets, Kind, MemoryObject, Move, SchedulerError

OVER_BUDGET = "over-budget"
OVER_SLOTS = "over-slots"
FREE_SPACE = "free-space"


def plan(objects: Iterable[MemoryObject], budgets: Budgets, now: float, model: ValueModel | None = None
         ) -> list[Move]:
    """The moves that bring `objects` within `budgets` at time `now`; see the module docstring."""
    planning = _Planning(index(objects), budgets, now, model or ValueModel())
    planning.trim_slots()
    for tier in (Tier.ENGINE, Tier.CPU):
        planning.trim_tier(tier)
    planning.trim_disk()
    for tier in (Tier.ENGINE, Tier.CPU):
        planning.fill(tier)
    return planning.moves()


def apply(objects: Iterable[MemoryObject], moves: Iterable[Move]) -> list[MemoryObject]:
    """The objects after `moves` (evicted ones gone), in their original order; SchedulerError on a move that
    does not match the state (unknown key, wrong kind or source tier)."""
    by_key = index(objects)
    for move in moves:
        obj = by_key.get(move.key)
        if obj is None or obj.kind is not move.kind or obj.tier is not move.src:
            raise SchedulerError(f"move {move.action.value} of {move.key!r} from {move.src.label} does not match "
                                 f"the state ({'absent' if obj is None else obj.tier.label})")
        if move.dst is None:
            del by_key[move.key]
        else:
            by_key[move.key] = replace(obj, tier=move.dst)
    return list(by_key.values())


def index(objects: Iterable[MemoryObject]) -> dict[str, MemoryObject]:
    """Objects by key; SchedulerError when two share a key."""
    by_key: dict[str, MemoryObject] = {}
    for obj in objects:
        if obj.key in by_key:
            raise SchedulerError(f"two objects share the key {obj.key!r}")
        by_key[obj.key] = obj
    return by_key


class _Planning:
    """The working state of one `plan` call: each object's tier so far (None: evicted) and why it moved."""

    def __init__(self, objects: dict[str, MemoryObject], budgets: Budgets, now: float, model: ValueModel) -> None:
        self.objects = objects
        self.budgets = budgets
        self.now = now
        self.model = model
        self.place: dict[str, Tier | None] = {key: obj.tier for key, obj in objects.items()}
        self.reasons: dict[str, str] = {}  # insertion order is decision order
        self.lost: dict[Tier, float] = {}  # highest density that left a tier for lack of bytes
        self.lost_slot_s = -math.inf  # most seconds saved by an adapter unloaded for lack of slots

    # ------------------------------------------------------------------ accounting

    def held(self, tier: Tier) -> int:
        if tier is Tier.DISK:
            return sum(obj.disk_bytes for key, obj in self.objects.items() if self.place[key] is not None)
        return sum(obj.size_bytes for key, obj in self.objects.items() if self.place[key] is tier)

    def loaded_adapters(self) -> list[MemoryObject]:
        return [obj for key, obj in self.objects.items()
                if obj.kind is Kind.ADAPTER and self.place[key] in (Tier.ENGINE, Tier.CPU)]

    def density(self, obj: MemoryObject, tier: Tier) -> float:
        return obj.density(self.model, self.now, tier)

    def move(self, obj: MemoryObject, tier: Tier | None, reason: str) -> None:
        self.place[obj.key] = tier
        self.reasons.setdefault(obj.key, reason)

    # ------------------------------------------------------------------ moving down

    def trim_slots(self) -> None:
        loaded = self.loaded_adapters()
        excess = len(loaded) - self.budgets.adapter_slots
        if excess <= 0:
            return
        saved = {a.key: a.saved_s(self.model, self.now) for a in loaded}
        slots = [AdapterState(a.key, a.tier, is_pinned=a.pinned) for a in loaded]
        for adapter in unload_order(slots, {}, saved)[:excess]:  # in use means pinned here (the reporter's rule)
            self.move(self.objects[adapter.key], Tier.DISK, OVER_SLOTS)
            self.lost_slot_s = max(self.lost_slot_s, saved[adapter.key])

    def trim_tier(self, tier: Tier) -> None:
        excess = self.held(tier) - self.budgets.of(tier)
        victims = sorted((obj for key, obj in self.objects.items() if self.place[key] is tier and not obj.pinned),
                         key=lambda obj: (self.density(obj, tier), obj.key))
        for obj in victims:
            if excess <= 0:
                return
            self.move(obj, tier.below(), OVER_BUDGET)
            self.lost[tier] = max(self.lost.get(tier, -math.inf), self.density(obj, tier))
            excess -= obj.size_bytes

    def trim_disk(self) -> None:
        excess = self.held(Tier.DISK) - self.budgets.disk_bytes
        victims = sorted((obj for key, obj in self.objects.items()
                          if self.place[key] is not None and obj.evictable and not obj.pinned and obj.disk_bytes),
                         key=lambda obj: (self.density(obj, Tier.DISK), obj.key))
        for obj in victims:
            if excess <= 0:
                return
            self.move(obj, None, OVER_BUDGET)
            excess -= obj.disk_bytes

    # ------------------------------------------------------------------ moving up

    def fill(self, tier: Tier) -> None:
        """Move the densest eligible objects up into `tier` while they fit its free room (and, for adapters, a
        free slot). Nothing is displaced; nothing moved down in this plan comes back."""
        room = math.floor(self.budgets.of(tier) * self.model.prefetch_fill) - self.held(tier)
        free_slots = self.budgets.adapter_slots - len(self.loaded_adapters())
        for obj in sorted(self.rising(tier), key=lambda obj: (-self.density(obj, tier), obj.key)):
            needs_slot = obj.kind is Kind.ADAPTER and self.place[obj.key] is Tier.DISK
            if obj.size_bytes > room or (needs_slot and free_slots <= 0):
                continue
            self.move(obj, tier, FREE_SPACE)
            room -= obj.size_bytes
            free_slots -= needs_slot

    def rising(self, tier: Tier) -> list[MemoryObject]:
        """Objects that may move up into `tier`: unpinned, below it, allowed there, not moved down in this plan,
        worth more than `min_prefetch_s`, denser than anything that left `tier` (and, for adapters, saving more
        than any adapter unloaded for lack of slots)."""
        floor = self.lost.get(tier, -math.inf)
        return [obj for key, obj in self.objects.items()
                if not obj.pinned and self.place[key] is not None and self.place[key] > tier
                and obj.ceiling <= tier and key not in self.reasons
                and self.model.is_worth_prefetching(obj.saved_s(self.model, self.now))
                and self.density(obj, tier) > floor
                and (obj.kind is not Kind.ADAPTER or obj.saved_s(self.model, self.now) > self.lost_slot_s)]

    # ------------------------------------------------------------------ result

    def moves(self) -> list[Move]:
        moves = [self._move_of(self.objects[key], reason) for key, reason in self.reasons.items()]
        moves = [move for move in moves if move is not None]
        return [m for m in moves if _is_down(m)] + [m for m in moves if not _is_down(m)]

    def _move_of(self, obj: MemoryObject, reason: str) -> Move | None:
        dst = self.place[obj.key]
        if dst is obj.tier:
            return None
        if dst is None:
            action = Action.EVICT
        elif dst > obj.tier:
            action = Action.DEMOTE
        else:
            action = Action.PREFETCH if obj.tier is Tier.DISK else Action.PROMOTE
        return Move(action, obj.key, obj.kind, obj.tier, dst, reason)


def _is_down(move: Move) -> bool:
    return move.action in (Action.DEMOTE, Action.EVICT)
