"""Where LoRA adapters live, planned as pure functions (no I/O, no engine): which adapters the engine has loaded.

How vLLM holds adapters (0.32), and so what the sidecar decides:
- `load_lora_adapter` registers a name and preloads the weights into the worker's CPU LoRA cache, an LRU of
  `max_cpu_loras` adapters (default and minimum: `max_loras`); `unload_lora_adapter` forgets the name.
- Each step the engine copies the adapters of the running batch into its `max_loras` GPU slots itself, LRU, and an
  adapter in a GPU slot is also in the CPU cache. The sidecar cannot choose GPU slots; it chooses the *loaded set*.

So the model here, in the tiers of `memcore.tiers`: ENGINE (in a GPU slot, as last observed), CPU (loaded, not
in a slot) and DISK (registered only). ENGINE and CPU both count as loaded; the loaded set holds at most
`max_cpu_loras` adapters.
`plan` returns `Move`s ("load": disk -> loaded, "unload": loaded -> disk); an executor calls the engine's API and
`apply` computes the state the moves lead to.

Who decides what: this module holds the rules of the adapter slots, and `unload_order` is the one place that
decides which loaded adapter gives up its slot (neither pinned nor in use, lowest value first, ties by key). The
request path (`sidecar.engine.adapters.AdapterService`) calls `plan` inline, so a request that needs its adapter
loaded never waits for a background pass; the tier scheduler (`sidecar.scheduler.planner`), which owns the byte
budgets across the memory packages and runs in the background, asks `unload_order` when more adapters are loaded
than it has slots. Both value adapters with `memcore.value.ValueModel`, the same defaults. `plan` never loads an
adapter nobody asked for: the scheduler's fill step is the one ranking of adapter prefetches (it weighs their bytes
against the other packages' objects) and carries them out as `AdapterService.load`, which plans like a request.

Invariants of `plan` (property-tested):
- after the moves, and after every prefix of them, the loaded set fits `max_cpu_loras` (when the state did);
- a pinned adapter is never unloaded; `can_pin` refuses more pinned adapters than `max_cpu_loras`;
- a loaded adapter with waiting requests is never unloaded (unless the state is already over capacity), so in
  particular never to make room for one without waiting requests;
- every load is of a waiting or pinned adapter: a slot nobody asks for stays free (prefetching is the scheduler's);
- work-conserving: after the moves, no waiting adapter is left on disk while a slot is free or held by an adapter
  that is neither pinned nor waiting;
- no move is a no-op (loads only unloaded adapters, unloads only loaded ones, never both for one adapter);
- deterministic: ties are broken by key, so equal inputs give equal plans; `plan(apply(s, plan(s)))` is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from memcore.tiers import Tier
from memcore.value import ValueModel


class ResidencyError(ValueError):
    """A request the residency model cannot honour (unknown adapter, bad capacity, too many pins)."""


@dataclass(frozen=True)
class Capacity:
    """The engine's LoRA limits: `max_loras` GPU slots, `max_cpu_loras` loaded adapters (>= max_loras)."""

    max_loras: int
    max_cpu_loras: int

    def __post_init__(self) -> None:
        if self.max_loras < 1:
            raise ResidencyError(f"max_loras must be >= 1, not {self.max_loras}")
        if self.max_cpu_loras < self.max_loras:
            raise ResidencyError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")


@dataclass(frozen=True)
class AdapterState:
    """What the planner knows of one adapter.

    `frequency` is the decayed use count as of `last_used` (see `memcore.value`); `last_used` is a time in seconds
    on the same clock as the planner's `now`.
    """

    key: str
    tier: Tier = Tier.DISK
    is_pinned: bool = False
    last_used: float = 0.0
    frequency: float = 0.0
    size_bytes: int = 0


@dataclass(frozen=True)
class LoadCost:
    """What losing an adapter's place costs: the seconds to load it back, `overhead_s + size_bytes / bytes_per_s`:
    the fixed cost of a load call (engine round trip, PEFT config parsing) plus reading and copying the weights.

    An adapter's value is then `memcore.value.ValueModel.saved_s` with this cost (`adapter_value`). Capacity is
    counted in adapters, not bytes, so size only matters through this cost: a large adapter is dearer to evict,
    not dearer to keep."""

    overhead_s: float = 0.05
    bytes_per_s: float = 1e9

    def __post_init__(self) -> None:
        if not self.bytes_per_s > 0:
            raise ResidencyError(f"bytes_per_s must be > 0, not {self.bytes_per_s}")
        if self.overhead_s < 0:
            raise ResidencyError(f"overhead_s must be >= 0, not {self.overhead_s}")

    def seconds(self, size_bytes: int) -> float:
        return self.overhead_s + size_bytes / self.bytes_per_s


def adapter_value(adapter: AdapterState, now: float, model: ValueModel, cost: LoadCost = LoadCost()) -> float:
    """The expected reload seconds keeping `adapter` loaded saves (LRFU frequency times its load cost)."""
    return model.saved_s(adapter.frequency, adapter.last_used, cost.seconds(adapter.size_bytes), now)


@dataclass(frozen=True)
class ResidencyState:
    """Every registered adapter, one `AdapterState` per key, kept sorted by key (so equal states compare equal)."""

    adapters: tuple[AdapterState, ...] = ()
    _by_key: dict[str, AdapterState] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.adapters, key=lambda a: a.key))
        by_key = {a.key: a for a in ordered}
        if len(by_key) != len(ordered):
            raise ResidencyError("adapter keys must be unique")
        object.__setattr__(self, "adapters", ordered)
        object.__setattr__(self, "_by_key", by_key)

    @classmethod
    def of(cls, adapters: Iterable[AdapterState]) -> ResidencyState:
        return cls(tuple(adapters))

    def get(self, key: str) -> AdapterState | None:
        return self._by_key.get(key)

    def load(self, key: str) -> AdapterState:
        """The adapter called `key`; ResidencyError if it is not registered."""
        adapter = self._by_key.get(key)
        if adapter is None:
            raise ResidencyError(f"unknown adapter {key!r}")
        return adapter

    def loaded(self) -> tuple[AdapterState, ...]:
        return tuple(a for a in self.adapters if a.tier.is_loaded)

    def num_pinned(self) -> int:
        return sum(a.is_pinned for a in self.adapters)

    def with_adapter(self, adapter: AdapterState) -> ResidencyState:
        """This state with `adapter` added, or replacing the one with its key."""
        return ResidencyState(tuple(a for a in self.adapters if a.key != adapter.key) + (adapter,))


@dataclass(frozen=True)
class Move:
    """One step of a plan. `reason`: "waiting" or "pinned" for loads; "make-room" or "over-capacity" for unloads
    (an executor may log its own reasons, such as "operator")."""

    kind: Literal["load", "unload"]
    adapter: str
    reason: str


def can_pin(state: ResidencyState, key: str, capacity: Capacity) -> bool:
    """Whether pinning `key` keeps the pinned adapters within `max_cpu_loras` (True if it is pinned already)."""
    adapter = state.load(key)
    return adapter.is_pinned or state.num_pinned() < capacity.max_cpu_loras


def pin(state: ResidencyState, key: str, capacity: Capacity) -> ResidencyState:
    """`state` with `key` pinned; ResidencyError if that would pin more adapters than can be loaded."""
    if not can_pin(state, key, capacity):
        raise ResidencyError(f"cannot pin {key!r}: {state.num_pinned()} adapters are pinned already and at most "
                             f"max_cpu_loras={capacity.max_cpu_loras} can be loaded; unpin one first")
    return state.with_adapter(replace(state.load(key), is_pinned=True))


def unpin(state: ResidencyState, key: str) -> ResidencyState:
    return state.with_adapter(replace(state.load(key), is_pinned=False))


def record_use(state: ResidencyState, key: str, now: float, model: ValueModel) -> ResidencyState:
    """`state` after one use of `key` at `now`: its frequency decayed to `now`, plus one."""
    adapter = state.load(key)
    frequency = model.frequency(adapter.frequency, adapter.last_used, now) + 1.0
    used = replace(adapter, frequency=frequency, last_used=max(now, adapter.last_used))
    return state.with_adapter(used)


def plan(state: ResidencyState, capacity: Capacity, waiting: Mapping[str, int], now: float,
         model: ValueModel | None = None, cost: LoadCost = LoadCost()) -> tuple[Move, ...]:
    """The moves that bring the loaded set to where it should be for the requests `waiting` (key -> count) now.

    Order of work: unload overflow if the state is over `max_cpu_loras`; load waiting adapters (most waiting
    requests first, pinned first among equals, then by value) and unloaded pinned ones, each into a free slot or
    one freed by unloading the lowest-valued loaded adapter that is neither pinned nor waiting. Slots left free stay
    free (prefetching is the tier scheduler's). Each unload comes right before the load it makes room for. See the
    module docstring for the invariants.
    """
    model = model or ValueModel()
    waiting = _check_waiting(state, waiting)
    if state.num_pinned() > capacity.max_cpu_loras:
        raise ResidencyError(f"{state.num_pinned()} adapters are pinned but max_cpu_loras={capacity.max_cpu_loras}")
    value = {a.key: adapter_value(a, now, model, cost) for a in state.adapters}
    evictable = unload_order(state.loaded(), waiting, value)
    moves = _trim_overflow(state, capacity, waiting, value, evictable)
    free = capacity.max_cpu_loras - len(state.loaded()) + len(moves)
    for adapter in _wanted(state, waiting, value):
        if free == 0 and not evictable:
            break
        if free == 0:
            moves.append(Move("unload", evictable.pop(0).key, "make-room"))
        else:
            free -= 1
        moves.append(Move("load", adapter.key, "waiting" if adapter.key in waiting else "pinned"))
    return tuple(moves)


def unload_order(loaded: Iterable[AdapterState], waiting: Mapping[str, int], value: Mapping[str, float]
                 ) -> list[AdapterState]:
    """The loaded adapters that may give up their slot, the first to go first: neither pinned nor waited for (in
    use), lowest `value` (key -> seconds saved) first, ties broken by key. Used by `plan` and the tier scheduler."""
    return sorted((a for a in loaded if not a.is_pinned and a.key not in waiting), key=lambda a: (value[a.key], a.key))


def apply(state: ResidencyState, moves: Iterable[Move]) -> ResidencyState:
    """The state after `moves`: loads land in the CPU cache (the engine picks GPU slots), unloads on disk."""
    for move in moves:
        adapter = state.load(move.adapter)
        if (move.kind == "load") == adapter.tier.is_loaded:
            raise ResidencyError(f"{move.kind} of {move.adapter!r} is a no-op: it is in tier {adapter.tier.label}")
        state = state.with_adapter(replace(adapter, tier=Tier.CPU if move.kind == "load" else Tier.DISK))
    return state


def _check_waiting(state: ResidencyState, waiting: Mapping[str, int]) -> dict[str, int]:
    for key, count in waiting.items():
        state.load(key)
        if count < 0:
            raise ResidencyError(f"waiting count of {key!r} must be >= 0, not {count}")
    return {key: count for key, count in waiting.items() if count > 0}


def _trim_overflow(state: ResidencyState, capacity: Capacity, waiting: dict[str, int], value: dict[str, float],
                   evictable: list[AdapterState]) -> list[Move]:
    """Unloads that bring an over-capacity state (capacity lowered, stale observation) within `max_cpu_loras`:
    evictable adapters first, then waiting ones with the fewest waiting requests. Pinned ones always fit."""
    excess = len(state.loaded()) - capacity.max_cpu_loras
    if excess <= 0:
        return []
    busy = sorted((a for a in state.loaded() if not a.is_pinned and a.key in waiting),
                  key=lambda a: (waiting[a.key], value[a.key], a.key))
    victims = (evictable + busy)[:excess]
    del evictable[:min(excess, len(evictable))]
    return [Move("unload", a.key, "over-capacity") for a in victims]


def _wanted(state: ResidencyState, waiting: dict[str, int], value: dict[str, float]) -> list[AdapterState]:
    """Unloaded adapters that are waited for or pinned, in load order."""
    wanted = [a for a in state.adapters if not a.tier.is_loaded and (a.key in waiting or a.is_pinned)]
    return sorted(wanted, key=lambda a: (-waiting.get(a.key, 0), not a.is_pinned, -value[a.key], a.key))

