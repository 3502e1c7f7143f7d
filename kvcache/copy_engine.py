"""Layer-by-layer copies of KV blocks between a paged KV cache and host staging: torch only, no vLLM.

The connector's worker drives a `LayerCopier` on a GPU (and on a CPU whose KV cache cannot take the one-copy
decode); `bench.gpu_check` and the `gpu` tests drive it without an engine. Rules:

- Host memory is allocated once, at start: two rings of staging slots (loads, saves), each slot holding
  `capacity` blocks as `[num_layers, capacity, *layer_block_shape]`, so one layer's rows of a step are one
  contiguous range; pinned when the device is CUDA. Device scratch (one slot's worth of one layer, per direction)
  and index buffers are allocated then too. A step allocates nothing on the host.
- Every copy between host and device reads or writes a contiguous pinned range (`rows[layer, :n]`), so
  `non_blocking=True` is a true asynchronous DMA; blocks are gathered and scattered on the device
  (`index_select` / `index_copy_` into the scratch), never by advanced indexing into host memory.
- Loads run on their own stream: stored blocks are decoded into a slot (host, one copy per block), then per layer
  one H2D copy and one `index_copy_`, and the layer's event is recorded. The load stream first waits for what the
  compute stream has queued (the blocks may have belonged to a request an earlier step was still computing).
- The compute stream waits, in `wait_layer(i)`, for layer i + 1's event (so for every layer up to i + 1: the load
  stream is in order), and after `load` returns for layer 0's: vLLM writes layer i's new KV (the slots of a loaded
  block that the step recomputes) before its attention calls `wait_layer(i)`, but after layer i - 1's attention,
  so the copy into layer i must be done by then. Loads therefore run one layer ahead of attention, and layer i + 2
  loads while layer i computes. `finish_step` waits for every layer's event, for layers no attention waited on.
- Saves run on a third stream: in `save_layer(i)` the save stream waits for an event just recorded on the compute
  stream (layer i's KV is written by then), gathers the blocks' rows of layer i into the scratch and copies them
  into the slot. `finish_saves` records the slot's event and makes the compute stream wait for it (the step's
  blocks may be freed and rewritten next step); the writer thread calls `SavedBlocks.wait()` (that event only)
  before it reads the bytes, and `release()` after, which returns the slot to its ring.
- Nothing here synchronizes a device or a stream: the host waits only on one slot's event, when it reuses a load
  slot whose copies may still run (two slots: the copies of two steps ago) and in the writer thread.
- A save finding no free slot (the writer is behind) is dropped (a future miss, never a stall); blocks beyond a
  slot's capacity in one step are dropped too. Loads beyond a slot's capacity are split across slots.

Dtypes: layers are viewed as unsigned integers of the same width, so every dtype (float8 included) moves bit for
bit through kernels that exist for every device.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager, Protocol

import torch

from kvcache.block_format import Scatter, SlotMap
from memcore.units import MIB

LOAD_SLOTS = 2
SAVE_SLOTS = 3
SLOT_BYTES = 512 * MIB  # one staging slot at most; the rings hold LOAD_SLOTS + SAVE_SLOTS of them
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class Event(Protocol):
    """A point in a stream's queue (`torch.cuda.Event`)."""

    def record(self, stream: Any) -> None: ...

    def synchronize(self) -> None: ...


class Streams(Protocol):
    """The device's stream API: CUDA's (`CudaStreams`), or immediate host copies (`HostStreams`)."""

    def current(self) -> Any: ...

    def new_stream(self) -> Any: ...

    def new_event(self) -> Event: ...

    def wait(self, stream: Any, event: Event) -> None:
        """`stream` runs what is queued on it later only once `event` has happened (the host does not wait)."""

    def on(self, stream: Any) -> ContextManager:
        """Work issued inside runs on `stream`."""


class CudaStreams:
    """CUDA streams and events on one device; `timing` events measure elapsed time (`bench.gpu_check`)."""

    def __init__(self, device: torch.device, timing: bool = False) -> None:
        self.device = device
        self.timing = timing

    def current(self) -> Any:
        return torch.cuda.current_stream(self.device)

    def new_stream(self) -> Any:
        return torch.cuda.Stream(self.device)

    def new_event(self) -> Event:
        return torch.cuda.Event(enable_timing=self.timing)

    def wait(self, stream: Any, event: Event) -> None:
        stream.wait_event(event)

    def on(self, stream: Any) -> ContextManager:
        return torch.cuda.stream(stream)


class _HostEvent:
    """A host copy is done when it returns: recording and waiting are no-ops."""

    def record(self, stream: Any) -> None:
        return

    def synchronize(self) -> None:
        return


class HostStreams:
    """The CPU: one implicit stream, copies done when issued."""

    def current(self) -> Any:
        return None

    def new_stream(self) -> Any:
        return None

    def new_event(self) -> Event:
        return _HostEvent()

    def wait(self, stream: Any, event: Event) -> None:
        return

    def on(self, stream: Any) -> ContextManager:
        return nullcontext()


def streams_for(device: torch.device) -> Streams:
    return CudaStreams(device) if device.type == "cuda" else HostStreams()


def staging_capacity(max_step_tokens: int, max_seqs: int, block_size: int, block_bytes: int,
                     slot_bytes: int = SLOT_BYTES) -> int:
    """Blocks per staging slot: what one step can save (each request completes at most `tokens / block_size + 1`
    full blocks and one prompt tail), within `slot_bytes`, at least one."""
    step_blocks = -(-max_step_tokens // block_size) + 2 * max_seqs
    return max(1, min(step_blocks, slot_bytes // max(1, block_bytes)))


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` viewed as unsigned integers of its element width (a view: same memory, any strides)."""
    return tensor.view(_BITS[tensor.element_size()])


@dataclass(eq=False)
class StagingSlot:
    """`capacity` blocks of host staging, `rows[layer, j]` being block j's row of that layer, the device block ids
    of the blocks in `index`, and `done`: the event after the last copy that reads or writes the slot."""

    rows: torch.Tensor
    index: torch.Tensor
    done: Event
    layers: SlotMap = field(init=False)

    def __post_init__(self) -> None:
        self.layers = SlotMap([layer.numpy() for layer in self.rows])

    @property
    def capacity(self) -> int:
        return self.rows.shape[1]

    def scatter(self, position: int) -> Scatter:
        """Where a stored block `[num_layers, *layer_block_shape]` decodes to be block `position` of the slot."""
        return self.layers.scatter((self.rows.shape[0], *self.rows.shape[2:]), position)


class StagingRing:
    """Staging slots allocated once. Invariant: a slot is either free (in the ring) or held by one user, never
    both; `acquire` hands out the free slot released longest ago, after waiting for its last copies."""

    def __init__(self, slots: Sequence[StagingSlot]) -> None:
        self._free = deque(slots)
        self._lock = threading.Lock()  # saves are released by the writer thread
        self.num_slots = len(slots)

    @classmethod
    def allocate(cls, num_slots: int, num_layers: int, capacity: int, layer_block_shape: tuple[int, ...],
                 dtype: torch.dtype, pin: bool, streams: Streams) -> StagingRing:
        slots = [StagingSlot(torch.empty((num_layers, capacity, *layer_block_shape), dtype=dtype, pin_memory=pin),
                             torch.empty(capacity, dtype=torch.int64, pin_memory=pin), streams.new_event())
                 for _ in range(num_slots)]
        return cls(slots)

    def acquire(self) -> StagingSlot | None:
        """A free slot whose earlier copies are done, or None if every slot is held."""
        with self._lock:
            if not self._free:
                return None
            slot = self._free.popleft()
        slot.done.synchronize()
        return slot

    def release(self, slot: StagingSlot) -> None:
        with self._lock:
            self._free.append(slot)

    @property
    def num_free(self) -> int:
        with self._lock:
            return len(self._free)


@dataclass(eq=False)
class SavedBlocks:
    """One step's saved blocks in a staging slot, for the writer thread: `wait()`, read `block(j)`, `release()`."""

    slot: StagingSlot
    count: int
    ring: StagingRing

    def wait(self) -> None:
        """Until the copies into the slot are done (this slot's event only)."""
        self.slot.done.synchronize()

    def block(self, position: int) -> torch.Tensor:
        """Block `position`, shaped `[num_layers, *layer_block_shape]` (a strided view of the slot)."""
        return self.slot.rows[:, position]

    def release(self) -> None:
        self.ring.release(self.slot)


@dataclass(eq=False)
class _StepSave:
    slot: StagingSlot | None  # None: no slot was free, the step's saves are dropped
    block_ids: tuple[int, ...]
    saved_layers: set[int] = field(default_factory=set)


class LayerCopier:
    """Loads and saves of KV blocks, layer by layer, on side streams (see the module rules).

    `layers[i]` is layer i's paged KV cache, `[num_blocks, *layer_block_shape]` (any strides), in forward order.
    """

    def __init__(self, layers: Sequence[torch.Tensor], streams: Streams, capacity: int,
                 load_slots: int = LOAD_SLOTS, save_slots: int = SAVE_SLOTS) -> None:
        if not layers or len({(tuple(t.shape[1:]), t.dtype, t.device) for t in layers}) != 1:
            raise ValueError("a LayerCopier needs at least one layer, all of one block shape, dtype and device")
        self.layers = [bits(layer) for layer in layers]
        self.streams = streams
        self.capacity = capacity
        layer_shape, dtype, device = tuple(layers[0].shape[1:]), self.layers[0].dtype, layers[0].device
        self.block_shape = (len(layers), *layer_shape)
        self.block_bytes = layers[0][0].nbytes * len(layers)
        pin = device.type == "cuda"
        self.load_ring = StagingRing.allocate(load_slots, len(layers), capacity, layer_shape, dtype, pin, streams)
        self.save_ring = StagingRing.allocate(save_slots, len(layers), capacity, layer_shape, dtype, pin, streams)
        self.load_stream, self.save_stream = streams.new_stream(), streams.new_stream()
        self._scratch = {s: torch.empty((capacity, *layer_shape), dtype=dtype, device=device) for s in ("load", "save")}
        self._index = {s: torch.empty(capacity, dtype=torch.int64, device=device) for s in ("load", "save")}
        self.layer_events = [streams.new_event() for _ in layers]  # load of layer i done (this step)
        self._computed = [streams.new_event() for _ in layers]  # compute stream at save_layer(i)
        self._begun = streams.new_event()  # compute stream at this step's first load
        self._waited = -1  # highest layer the compute stream waits for this step; -1: nothing loaded
        self._loading = False
        self._save: _StepSave | None = None
        self.dropped_saves = 0

    # ------------------------------------------------------------------ loads

    def load(self, block_ids: Sequence[int], decode: Callable[[int, Scatter], bool]) -> list[int]:
        """Load blocks `block_ids[i]` (device block ids), each decoded on the host by `decode(i, out)` (False: a
        miss, nothing written); returns the positions i that missed. The copies are queued, not done: attention
        waits for them through `wait_layer`."""
        missed: list[int] = []
        if not block_ids:
            return missed
        if not self._loading:  # the load stream waits for what the compute stream queued before this step
            self._begun.record(self.streams.current())
            self.streams.wait(self.load_stream, self._begun)
        for start in range(0, len(block_ids), self.capacity):
            chunk = block_ids[start:start + self.capacity]
            slot = self.load_ring.acquire()  # loads release at once, so one is always free
            index, found = slot.index.numpy(), 0
            for offset, block_id in enumerate(chunk):
                if decode(start + offset, slot.scatter(found)):
                    index[found], found = block_id, found + 1
                else:
                    missed.append(start + offset)
            if found:
                self._issue_load(slot, found)
            self.load_ring.release(slot)
        if self._loading and self._waited < 0:
            self.streams.wait(self.streams.current(), self.layer_events[0])
            self._waited = 0
        return missed

    def _issue_load(self, slot: StagingSlot, count: int) -> None:
        scratch, index = self._scratch["load"][:count], self._index["load"][:count]
        with self.streams.on(self.load_stream):
            index.copy_(slot.index[:count], non_blocking=True)
            for layer_index, layer in enumerate(self.layers):
                scratch.copy_(slot.rows[layer_index, :count], non_blocking=True)
                layer.index_copy_(0, index, scratch)
                self.layer_events[layer_index].record(self.load_stream)
        slot.done.record(self.load_stream)
        self._loading = True

    def wait_layer(self, layer_index: int) -> None:
        """Called as layer `layer_index`'s attention starts: the compute stream waits for the loads of every layer
        up to the next one (whose new KV the compute stream writes before it calls this again)."""
        if not self._loading:
            return
        target = min(layer_index + 1, len(self.layers) - 1)
        if target > self._waited:
            self.streams.wait(self.streams.current(), self.layer_events[target])
            self._waited = target

    # ------------------------------------------------------------------ saves

    def save_layer(self, layer_index: int, block_ids: Sequence[int]) -> None:
        """Copy layer `layer_index`'s rows of `block_ids` out to staging, after what the compute stream has queued
        so far. The first call of a step takes a save slot (or drops the step's saves if none is free)."""
        if self._save is None:
            self._save = self._begin_save(block_ids)
        if self._save.slot is not None and layer_index not in self._save.saved_layers:
            self._copy_out(self._save, layer_index)

    def _begin_save(self, block_ids: Sequence[int]) -> _StepSave:
        slot = self.save_ring.acquire()
        kept = tuple(block_ids[:self.capacity]) if slot is not None else ()
        self.dropped_saves += len(block_ids) - len(kept)
        if slot is not None:
            slot.index.numpy()[:len(kept)] = kept
            with self.streams.on(self.save_stream):
                self._index["save"][:len(kept)].copy_(slot.index[:len(kept)], non_blocking=True)
        return _StepSave(slot, kept)

    def _copy_out(self, save: _StepSave, layer_index: int) -> None:
        save.saved_layers.add(layer_index)
        count = len(save.block_ids)
        mark = self._computed[layer_index]
        mark.record(self.streams.current())
        self.streams.wait(self.save_stream, mark)
        scratch = self._scratch["save"][:count]
        with self.streams.on(self.save_stream):
            torch.index_select(self.layers[layer_index], 0, self._index["save"][:count], out=scratch)
            save.slot.rows[layer_index, :count].copy_(scratch, non_blocking=True)

    def finish_saves(self) -> SavedBlocks | None:
        """The step's saves, once every layer is queued (layers no attention saved are copied now); None if the step
        saved nothing or its saves were dropped. The compute stream waits for the copies before its next work."""
        save, self._save = self._save, None
        if save is None or save.slot is None:
            return None
        for layer_index in range(len(self.layers)):
            if layer_index not in save.saved_layers:
                self._copy_out(save, layer_index)
        save.slot.done.record(self.save_stream)
        self.streams.wait(self.streams.current(), save.slot.done)
        return SavedBlocks(save.slot, len(save.block_ids), self.save_ring)

    # ------------------------------------------------------------------ steps

    def finish_step(self) -> None:
        """End of the forward pass: the compute stream waits for every layer's load (some layers may not have
        waited), and the next step starts afresh."""
        if self._loading and self._waited < len(self.layers) - 1:
            self.streams.wait(self.streams.current(), self.layer_events[-1])
        self._loading, self._waited = False, -1
