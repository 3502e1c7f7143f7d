"""memsidecar's vLLM KV connector: the only module of `kvcache` that imports vLLM.

Loaded by vLLM through `kv_connector_module_path="kvcache.connector"`, `kv_connector="MemsidecarConnector"`. One
instance runs in the scheduler (engine core) and one in each worker; they share the LMDB store on disk and talk
only through vLLM's metadata objects:

- scheduler: computes each request's block keys in its namespace (model fingerprint, engine variant, KV dtype and
  layout, block size, LoRA adapter by content, isolation scope from `cache_salt`), registers the namespace's scope
  with the store (whose disk tier holds each tenant's scope to its budget), reports the stored prefix to vLLM, and
  plans each step's loads and saves (`TransferPlanner`);
- worker: loads planned blocks into the paged KV cache and copies newly filled blocks out to a background thread
  that writes them to the store, so decoding never waits on disk. On the CPU a load decodes into the cache before
  the forward pass (one copy) and saves are copied after it; on a GPU both go layer by layer through pinned
  staging on side streams (`kvcache.copy_engine`): attention waits for its layer's load, and each layer's blocks
  are copied out as soon as its attention is done.

A block that fails to load (missing, corrupt) is reported to vLLM, which recomputes it
(`kv_load_failure_policy="recompute"`): a failed load costs time, never correctness.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole
from vllm.v1.kv_cache_interface import group_kernel_blocks

from kvcache.block_format import SlotMap
from kvcache.connector_config import ConnectorConfig
from kvcache.copy_engine import LayerCopier, SavedBlocks, staging_capacity, streams_for
from kvcache.fingerprint import adapter_id
from kvcache.keys import Namespace, block_keys, chain_key, namespace_id, namespace_root
from kvcache.store import TieredStore
from kvcache.transfer_plan import BlockTransfer, ScheduledRequest, StepTransfers, TransferPlanner
from kvcache.worker_control import ControlReader, control_path
from kvcache.worker_stats import LoadTotals, StatsPublisher, stats_path
from memcore.units import MIB

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

log = logging.getLogger("memsidecar.kvcache")
PIN_PARAM = "memsidecar_pin"  # in a request's kv_transfer_params: pin (true) or unpin (false) its prompt's blocks
# Blocks a load read from disk (or the shared tier) are promoted to RAM by the writer thread once no load has run
# for PROMOTE_IDLE_S (at the latest PROMOTE_MAX_WAIT_S after the load), a few at a time: promotion copies bytes
# while holding the GIL, and on a small CPU machine doing it during the forward pass would slow that pass more
# than the promotion is worth.
PROMOTE_IDLE_S = 0.5
PROMOTE_MAX_WAIT_S = 5.0
PROMOTE_CHUNK = 8


@dataclass
class MemsidecarMetadata(KVConnectorMetadata):
    """Scheduler → worker, once per step."""

    transfers: StepTransfers = field(default_factory=StepTransfers)


class MemsidecarConnector(KVConnectorBase_V1):
    """Activation memory for vLLM: block-granular KV reuse across requests, restarts and engines."""

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole, kv_cache_config: "KVCacheConfig") -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._config = ConnectorConfig.from_vllm(vllm_config)
        self._block_size = vllm_config.cache_config.block_size
        self._num_blocks = kv_cache_config.num_blocks
        self._base_namespace = self._config.base_namespace
        store_config = self._config.store_config()
        if role == KVConnectorRole.SCHEDULER:
            self._store = TieredStore.open(store_config, with_ram=False)
            self._planner = TransferPlanner(self._block_size, chain_key, self._store.lookup_prefix,
                                            self._store.contains_locally)
            self._requests: dict[str, Request] = {}
            self._adapter_ids: dict[tuple[str, str], str] = {}
        else:
            self._store = TieredStore.open(store_config, with_ram=True)
            scheduler = vllm_config.scheduler_config
            self._worker = _Worker(self._store, self._base_namespace.kv_layout,
                                   StatsPublisher(stats_path(self._config.store_dir)),
                                   ControlReader(control_path(self._config.store_dir)),
                                   (scheduler.max_num_batched_tokens, scheduler.max_num_seqs, self._block_size))
        log.info("memsidecar KV connector (%s) on %s", role.name.lower(), self._config.store_dir)

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config: dict[str, Any]) -> bool:
        """On a GPU `wait_for_layer_load` and `save_kv_layer` queue copies and waits between layers: a full CUDA
        graph would replay the forward without them."""
        return True

    # ---------------------------------------------------------------- scheduler side

    def _request_namespace(self, request: "Request") -> Namespace:
        """The engine's namespace plus the request's LoRA adapter (by content) and isolation scope (`cache_salt`)."""
        lora = request.lora_request
        adapter = "none" if lora is None else self._adapter_id(lora.lora_name, lora.lora_path)
        return self._base_namespace.with_request(adapter=adapter, scope=request.cache_salt or "public")

    def _apply_pin(self, request: "Request") -> None:
        """`kv_transfer_params: {"memsidecar_pin": true | false}` pins (or unpins) the full blocks of the request's
        prompt on disk, in its namespace; pinned blocks are never evicted (they may be saved later)."""
        params = request.kv_transfer_params or {}
        if not isinstance(params.get(PIN_PARAM), bool):
            return
        keys = block_keys(self._request_namespace(request), request.prompt_token_ids or [])
        (self._store.pin if params[PIN_PARAM] else self._store.unpin)(keys)

    def _adapter_id(self, name: str, path: str) -> str:
        """Content id of an adapter, hashed once per (name, path) in this process (as vLLM caches adapters)."""
        if (name, path) not in self._adapter_ids:
            self._adapter_ids[name, path] = adapter_id(name, Path(path), self._config.store_dir / "fingerprints.json")
        return self._adapter_ids[name, path]

    def get_num_new_matched_tokens(self, request: "Request", num_computed_tokens: int) -> tuple[int | None, bool]:
        self._requests[request.request_id] = request
        self._apply_pin(request)
        namespace = self._request_namespace(request)
        self._store.register_namespace(namespace_id(namespace), namespace.scope)  # its tenant's disk budget
        root = namespace_root(namespace)
        hit = self._planner.match(request.request_id, root, request.prompt_token_ids or [], num_computed_tokens)
        return hit, False

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int) -> None:
        self._planner.allocated(request.request_id, num_external_tokens)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        scheduled = []
        for new in scheduler_output.scheduled_new_reqs:
            scheduled.append(self._scheduled(new.req_id, new.num_computed_tokens, scheduler_output))
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            scheduled.append(self._scheduled(req_id, cached.num_computed_tokens[i], scheduler_output))
        return MemsidecarMetadata(self._planner.plan_step([s for s in scheduled if s is not None]))

    def _scheduled(self, req_id: str, num_computed: int, output: "SchedulerOutput") -> ScheduledRequest | None:
        request = self._requests.get(req_id)
        if request is None or self._kv_cache_manager is None:
            return None
        block_ids = self._kv_cache_manager.get_block_ids(req_id)[0]
        return ScheduledRequest(req_id, request.all_token_ids, request.num_prompt_tokens, num_computed,
                                output.num_scheduled_tokens[req_id], block_ids)

    def request_finished(self, request: "Request", block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        self._planner.finished(request.request_id)
        self._requests.pop(request.request_id, None)
        return False, None

    # ---------------------------------------------------------------- worker side

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._worker.register(kv_caches, self._num_blocks)

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, MemsidecarMetadata)
        if meta.transfers.loads:
            self._worker.load(meta.transfers.loads)

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._worker.wait_layer(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: "AttentionMetadata",
                      **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, MemsidecarMetadata)
        if meta.transfers.saves:
            self._worker.save_layer(layer_name, meta.transfers.saves)

    def wait_for_save(self) -> None:
        self._worker.step_finished()
        meta = self._get_connector_metadata()
        assert isinstance(meta, MemsidecarMetadata)
        if meta.transfers.saves:
            self._worker.save(meta.transfers.saves)

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker.take_load_errors()

    def shutdown(self) -> None:
        if self.role == KVConnectorRole.WORKER:
            self._worker.close()
        self._store.close()


class _Worker:
    """The worker's half: block copies between the paged KV cache and the store.

    A store entry is one block of every layer, shaped `[num_layers, *block_shape]`, written to the store by one
    background thread. On the CPU (a contiguous cache) loads decode straight into the KV cache while the forward pass
    waits, and saves are copied out after the forward pass (the blocks may be freed after this step). Elsewhere a
    `LayerCopier` queues loads layer by layer before the forward pass and saves as each layer's attention ends, and
    the writer waits for a save's copies before it reads them. Blocks loads read from disk (or the shared tier) are
    promoted to RAM afterwards by the writer thread, off the critical path. At start a third thread maps the
    disk tier's page-cached pages into the process and reads its newest blocks, so that the first loads after a
    restart neither fault pages in nor wait for the device.
    """

    def __init__(self, store: TieredStore, layout: str, publisher: StatsPublisher,
                 control: ControlReader | None = None, step_limits: tuple[int, int, int] = (8192, 256, 16)) -> None:
        self.store = store
        self.step_limits = step_limits  # (max tokens, max requests, block size) of one step: sizes the staging
        self._copier: LayerCopier | None = None
        self._layer_of: dict[str, int] = {}  # layer name -> index in `layers` (layers sharing a cache: one index)
        self._saving: tuple[tuple[BlockTransfer, ...], list[int]] | None = None  # this step's saves, block ids
        self.layout = layout
        self.publisher = publisher
        self.control = control
        self._slots: SlotMap | None = None
        self.layers: list[torch.Tensor] = []
        self._load_errors: set[int] = set()
        self.loads = LoadTotals()
        self._last_load_at = 0.0
        self._loaded_at: float | None = None  # perf_counter at the end of this step's load, if it loaded
        self._waiting_since: float | None = None  # when the oldest unpromoted load ran
        self.dropped_saves = 0
        self._queue: queue.Queue = queue.Queue(maxsize=64)
        self._closing = threading.Event()
        self.premapped_bytes = 0
        self.warmed_bytes = 0
        # Threads start last: the writer publishes `_stats` at once, which reads every attribute above.
        self._thread = threading.Thread(target=self._write_loop, name="memsidecar-kv-writer", daemon=True)
        self._premap = threading.Thread(target=self._map_cached_store, name="memsidecar-kv-premap", daemon=True)
        self._thread.start()
        self._premap.start()

    def _map_cached_store(self) -> None:
        """Before the first loads, map the disk tier's page-cached pages into this process (see `mapped_pages`),
        then read its newest blocks up to the RAM budget (`TieredStore.warm_disk`): after a restart, loads from
        disk then cost what loads from RAM do instead of page faults and device reads while the forward waits."""
        started = time.perf_counter()
        try:
            self.premapped_bytes = self.store.disk.map_cached_pages(self._closing.is_set)
            mapped_at = time.perf_counter()
            self.warmed_bytes = self.store.warm_disk(self._closing.is_set)
        except Exception:  # placement only: unmapped pages are faulted in by the loads
            log.exception("mapping the KV disk tier's pages failed")
            return
        log.info("memsidecar KV worker: mapped %.1f MiB of the disk tier's cached pages in %.2f s, then read its "
                 "newest %.1f MiB in %.2f s", self.premapped_bytes / MIB, mapped_at - started,
                 self.warmed_bytes / MIB, time.perf_counter() - mapped_at)

    def register(self, kv_caches: dict[str, torch.Tensor], num_blocks: int) -> None:
        seen: dict[int, int] = {}
        for name, tensor in kv_caches.items():
            if tensor.data_ptr() not in seen:  # layers sharing one cache are stored once
                seen[tensor.data_ptr()] = len(self.layers)
                self.layers.append(group_kernel_blocks(tensor, num_blocks))
            self._layer_of[name] = seen[tensor.data_ptr()]
        shapes = {tuple(layer.shape[1:]) for layer in self.layers}
        dtypes = {layer.dtype for layer in self.layers}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise ValueError(f"memsidecar KV connector needs uniform layers; got shapes {shapes}, dtypes {dtypes}")
        self.block_shape = (len(self.layers), *shapes.pop())
        self.dtype = dtypes.pop()
        self.dtype_name = str(self.dtype).removeprefix("torch.")
        self.block_bytes = self.layers[0][0].nbytes * len(self.layers)
        self.device = self.layers[0].device
        # On the CPU a block's slot in each layer is one contiguous slab: stored blocks are decoded straight into
        # those slabs (one copy). Elsewhere (CUDA) they go layer by layer through staging allocated now.
        direct = self.device.type == "cpu" and all(layer.is_contiguous() for layer in self.layers)
        self._slots = SlotMap([_numpy_view(layer) for layer in self.layers]) if direct else None
        if not direct:
            capacity = staging_capacity(*self.step_limits, block_bytes=self.block_bytes)
            self._copier = LayerCopier(self.layers, streams_for(self.device), capacity)
        log.info("memsidecar KV worker: %d layers, block %s %s on %s, loads %s", len(self.layers),
                 self.block_shape, self.dtype_name, self.device, "direct (one copy)" if direct else
                 f"layer by layer through staging of {self._copier.capacity} blocks per slot")

    def _staging(self, count: int) -> torch.Tensor:
        return torch.empty((count, *self.block_shape), dtype=self.dtype)

    def load(self, loads: tuple[BlockTransfer, ...]) -> None:
        """Fill the planned blocks before the forward pass (on a GPU: decode them and queue their copies); the wall
        time of that is counted."""
        started = time.perf_counter()
        errors_before = len(self._load_errors)
        if self._slots is not None:
            self._load_direct(loads)
        else:
            self._load_staged(loads)
        loaded = len(loads) - (len(self._load_errors) - errors_before)
        self.loads.add(loaded, loaded * self.block_bytes, time.perf_counter() - started)
        self._last_load_at = time.monotonic()
        if self._waiting_since is None and self.store.has_deferred():
            self._waiting_since = self._last_load_at
        self._loaded_at = time.perf_counter()

    def step_finished(self) -> None:
        """The forward pass of this step is done: time it if the step loaded blocks (see `LoadTotals`)."""
        if self._copier is not None:
            self._copier.finish_step()
        if self._loaded_at is not None:
            self.loads.add_forward(time.perf_counter() - self._loaded_at)
            self._loaded_at = None

    def _load_direct(self, loads: tuple[BlockTransfer, ...]) -> None:
        """Decode each block's rows (one per layer) straight into its slot in the layers (CPU, one copy)."""
        for transfer in loads:
            target = self._slots.scatter(self.block_shape, transfer.block_id)
            if not self.store.get_into(transfer.key, target, self.dtype_name, self.layout, defer_promotion=True):
                self._load_errors.add(transfer.block_id)

    def _load_staged(self, loads: tuple[BlockTransfer, ...]) -> None:
        """Decode the blocks into staging and queue their copies, layer by layer (`LayerCopier.load`)."""
        missed = self._copier.load([t.block_id for t in loads], lambda i, out: self.store.get_into(
            loads[i].key, out, self.dtype_name, self.layout, defer_promotion=True))
        self._load_errors.update(loads[i].block_id for i in missed)

    def wait_layer(self, layer_name: str) -> None:
        """Attention of `layer_name` is about to read its KV: its stream waits for the loads it needs."""
        if self._copier is not None and layer_name in self._layer_of:
            self._copier.wait_layer(self._layer_of[layer_name])

    def save_layer(self, layer_name: str, saves: tuple[BlockTransfer, ...]) -> None:
        """Attention of `layer_name` is done: queue the copy of its rows of this step's saved blocks."""
        if self._copier is None or layer_name not in self._layer_of:
            return  # on the CPU every layer is copied at once in `save`, after the forward pass
        if self._saving is None or self._saving[0] is not saves:
            self._saving = (saves, [t.block_id for t in saves])
        self._copier.save_layer(self._layer_of[layer_name], self._saving[1])

    def save(self, saves: tuple[BlockTransfer, ...]) -> None:
        """After the forward pass: hand this step's saved blocks to the writer thread."""
        if self._copier is not None:
            if self._saving is None or self._saving[0] is not saves:  # no attention layer saved: all layers now
                self._copier.save_layer(0, [t.block_id for t in saves])
            self._saving = None
            saved = self._copier.finish_saves()
            if saved is not None:
                self._enqueue([t.key for t in saves[:saved.count]], saved)
            return
        staging = self._staging(len(saves))
        block_ids = torch.tensor([t.block_id for t in saves], device=self.device)
        for layer_index, layer in enumerate(self.layers):
            staging[:, layer_index].copy_(layer.index_select(0, block_ids))
        self._enqueue([t.key for t in saves], staging)

    def _enqueue(self, keys: list[bytes], blocks: torch.Tensor | SavedBlocks) -> None:
        try:
            self._queue.put_nowait((keys, blocks))
        except queue.Full:  # never stall decoding on the disk: a dropped save is only a future miss
            if isinstance(blocks, SavedBlocks):
                blocks.release()
            self.dropped_saves += len(keys)
            log.warning("KV writer is behind; dropped %d block saves (%d in all)", len(keys), self.dropped_saves)

    def _write_loop(self) -> None:
        while True:
            if self.control is not None:
                self.control.apply_pending(self.store)  # the sidecar's tier commands (`worker_control`)
            try:
                self.publisher.maybe_publish(self._stats)
            except Exception:  # a report only (at most one try per interval): it must never stop the saves
                log.exception("publishing the KV worker's figures failed")
            self._maybe_promote()
            try:
                item = self._queue.get(timeout=self.publisher.interval_s if self._waiting_since is None
                                       else PROMOTE_IDLE_S / 2)
            except queue.Empty:
                continue
            if item is None:
                return
            keys, saved = item
            try:
                self.store.put_many(_saved_arrays(keys, saved), self.dtype_name, self.layout)
            except Exception:  # a failed save is a future miss, never a failed request
                log.exception("saving %d KV blocks failed", len(keys))
            finally:
                if isinstance(saved, SavedBlocks):
                    saved.release()
                self._queue.task_done()

    def _stats(self) -> dict:
        """What the worker publishes for the sidecar (`worker_stats`)."""
        dropped = self.dropped_saves + (self._copier.dropped_saves if self._copier else 0)
        return {**self.store.stats(), "dropped_saves": dropped, "premapped_bytes": self.premapped_bytes,
                "warmed_bytes": self.warmed_bytes,
                "load_path": "direct" if self._slots is not None else "staged", "loads": self.loads.as_dict(),
                "ram_namespaces": self.store.ram_namespaces(),
                "applied_command": self.control.applied if self.control else 0}

    def _maybe_promote(self) -> None:
        """Promote the loads' disk hits to RAM if loading has paused (see PROMOTE_IDLE_S), yielding the GIL between
        chunks, and stopping as soon as another load starts."""
        now = time.monotonic()
        if self._waiting_since is None or (now - self._last_load_at < PROMOTE_IDLE_S
                                           and now - self._waiting_since < PROMOTE_MAX_WAIT_S):
            return
        self._waiting_since = None
        started = self._last_load_at
        try:
            while self.store.promote_deferred(PROMOTE_CHUNK) and self._last_load_at == started:
                time.sleep(0)
        except Exception:  # a block not promoted is read from disk again next time
            log.exception("promoting loaded KV blocks to RAM failed")
        if self.store.has_deferred() and self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def take_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def close(self) -> None:
        self._closing.set()
        self._premap.join(timeout=30)  # it must not outlive the store's memory map
        self._queue.put(None)
        self._thread.join(timeout=30)


def _saved_arrays(keys: list[bytes], saved: torch.Tensor | SavedBlocks) -> list[tuple[bytes, Any]]:
    """(key, block as a numpy array) for the writer; a `SavedBlocks` is read only once its copies are done."""
    if isinstance(saved, SavedBlocks):
        saved.wait()
        return [(key, saved.block(j).numpy()) for j, key in enumerate(keys)]
    return [(key, _numpy_view(block)) for key, block in zip(keys, saved)]


def _numpy_view(tensor: torch.Tensor):
    """A numpy view of a CPU tensor with an integer dtype of the same width (numpy has no bfloat16)."""
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return tensor.view(width).numpy()
