"""Which KV blocks to load and save in each engine step: the connector's scheduler-side bookkeeping, without vLLM.

Invariants:
- a request's block `i` has key `keys[i]`, the chained key of its first `(i + 1) * block_size` tokens in the
  request's namespace; keys are computed once and extended as decoding fills blocks;
- a prompt whose length is not a multiple of the block size also has a *tail* block: its partial last block, keyed
  by chaining the tail's tokens (fewer than a block, so never equal to a full block's key); it is saved once the
  prompt is computed, so the same prompt later loads everything but its last token;
- a hit never covers the whole prompt: the last prompt token is always computed, so the engine has logits to sample
  from; the block holding it is loaded whole and that token's slot recomputed;
- a block is planned for saving at most once per request, only once all its tokens' KV has been computed (after the
  step that computes its last token), and never when the store already holds its key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ChainFn = Callable[[bytes, Sequence[int]], bytes]


@dataclass(frozen=True)
class BlockTransfer:
    """One block moving between the store (`key`) and the engine's KV cache (`block_id`)."""

    key: bytes
    block_id: int


@dataclass(frozen=True)
class StepTransfers:
    """What the worker does in one step: loads before the forward pass, saves after it."""

    loads: tuple[BlockTransfer, ...] = ()
    saves: tuple[BlockTransfer, ...] = ()


@dataclass(frozen=True)
class ScheduledRequest:
    """A request as scheduled for one step: its tokens so far, progress, and the KV blocks it owns."""

    req_id: str
    token_ids: Sequence[int]  # prompt, then generated tokens
    num_prompt_tokens: int
    num_computed_tokens: int
    num_scheduled_tokens: int
    block_ids: Sequence[int]


@dataclass
class _Tracked:
    root: bytes
    keys: list[bytes] = field(default_factory=list)
    tail: bytes | None = None  # key of the prompt's partial last block, if it has one
    tail_done: bool = False  # the tail block was saved or loaded
    num_saved_blocks: int = 0
    match_start: int = 0  # first block of the last match (the engine's own hit ends there)
    pending_load: tuple[int, int] | None = None  # (first block, number of blocks) to load in the next step

    def key(self, index: int) -> bytes:
        return self.keys[index] if index < len(self.keys) else self.tail


class TransferPlanner:
    """Tracks requests from their prefix match to their end, and plans each step's block transfers."""

    def __init__(self, block_size: int, chain: ChainFn, count_stored_prefix: Callable[[Sequence[bytes]], int],
                 is_stored: Callable[[bytes], bool]) -> None:
        self.block_size = block_size
        self._chain = chain
        self._count_stored_prefix = count_stored_prefix
        self._is_stored = is_stored
        self._requests: dict[str, _Tracked] = {}

    def _keys(self, tracked: _Tracked, token_ids: Sequence[int], num_blocks: int) -> list[bytes]:
        bs = self.block_size
        while len(tracked.keys) < num_blocks:
            i = len(tracked.keys)
            parent = tracked.keys[-1] if tracked.keys else tracked.root
            tracked.keys.append(self._chain(parent, token_ids[i * bs:(i + 1) * bs]))
        return tracked.keys[:num_blocks]

    def match(self, req_id: str, root: bytes, prompt_ids: Sequence[int], num_computed_tokens: int) -> int:
        """Tokens beyond `num_computed_tokens` (block-aligned) whose KV the store holds. Side-effect free for vLLM."""
        tracked = self._requests.get(req_id)
        if tracked is None or tracked.root != root:
            tracked = self._requests[req_id] = _Tracked(root)
        bs, length = self.block_size, len(prompt_ids)
        keys = self._keys(tracked, prompt_ids, length // bs)
        if length % bs and tracked.tail is None:
            tracked.tail = self._chain(keys[-1] if keys else root, prompt_ids[len(keys) * bs:])
        first = num_computed_tokens // bs
        tracked.match_start, tracked.num_saved_blocks, tracked.pending_load = first, first, None
        tracked.tail_done = False
        stored_end = (first + self._count_stored_prefix(keys[first:])) * bs if first < len(keys) else first * bs
        if stored_end == len(keys) * bs and tracked.tail is not None and self._is_stored(tracked.tail):
            stored_end = length
        return max(0, min(stored_end, length - 1) - first * bs)

    def allocated(self, req_id: str, num_external_tokens: int) -> None:
        """vLLM allocated blocks after the last `match`: load the external tokens in the request's next step."""
        tracked = self._requests.get(req_id)
        if tracked is not None and num_external_tokens > 0:
            num_blocks = -(-num_external_tokens // self.block_size)
            tracked.pending_load = (tracked.match_start, num_blocks)

    def plan_step(self, scheduled: Sequence[ScheduledRequest]) -> StepTransfers:
        loads: list[BlockTransfer] = []
        saves: list[BlockTransfer] = []
        for request in scheduled:
            tracked = self._requests.get(request.req_id)
            if tracked is None:
                continue
            if tracked.pending_load is not None:
                first, count = tracked.pending_load
                tracked.pending_load = None
                loads += [BlockTransfer(tracked.key(i), request.block_ids[i]) for i in range(first, first + count)]
                tracked.num_saved_blocks = max(tracked.num_saved_blocks, min(first + count, len(tracked.keys)))
                tracked.tail_done = tracked.tail_done or first + count > len(tracked.keys)
            saves += self._new_full_blocks(tracked, request) + self._new_tail(tracked, request)
        return StepTransfers(tuple(loads), tuple(saves))

    def _new_full_blocks(self, tracked: _Tracked, request: ScheduledRequest) -> list[BlockTransfer]:
        computed_after = request.num_computed_tokens + request.num_scheduled_tokens
        full = min(computed_after // self.block_size, len(request.block_ids))
        if full <= tracked.num_saved_blocks:
            return []
        keys = self._keys(tracked, request.token_ids, full)
        start, tracked.num_saved_blocks = tracked.num_saved_blocks, full
        return [BlockTransfer(keys[i], request.block_ids[i]) for i in range(start, full)
                if not self._is_stored(keys[i])]

    def _new_tail(self, tracked: _Tracked, request: ScheduledRequest) -> list[BlockTransfer]:
        """The prompt's partial last block, once the whole prompt is computed (before any generated token is)."""
        computed_after = request.num_computed_tokens + request.num_scheduled_tokens
        if tracked.tail is None or tracked.tail_done or computed_after < request.num_prompt_tokens:
            return []
        tracked.tail_done = True
        index = request.num_prompt_tokens // self.block_size
        if computed_after > request.num_prompt_tokens or self._is_stored(tracked.tail):
            return []  # generated tokens' KV is already in the block: it no longer holds just the prompt tail
        return [BlockTransfer(tracked.tail, request.block_ids[index])]

    def finished(self, req_id: str) -> None:
        self._requests.pop(req_id, None)

