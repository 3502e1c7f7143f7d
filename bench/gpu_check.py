"""Activation memory's GPU copy path, measured with torch alone (no vLLM): is it fast enough to hide behind compute?

    python -m bench.gpu_check [--json] [--device cuda|cpu] [--tokens 4096] [--layers 32] [--kv-heads 8]
                              [--head-dim 128] [--block-size 16] [--hidden 4096] [--ffn 14336] [--dtype bfloat16]

It prints:
- pinned H2D and D2H bandwidth: one prompt's KV (all layers) between a pinned host tensor and the device;
- the `LayerCopier`'s load bandwidth (the per-layer H2D copies and `index_copy_` into a paged cache, between the
  first and last layer's events) as a fraction of pinned H2D, and its save bandwidth;
- the host's decode rate (stored blocks checked and decoded into the pinned staging, as the connector does);
- load time per layer against compute per layer: a proxy of one transformer layer's prefill of `--tokens` tokens,
  two matmuls `[tokens, hidden] x [hidden, ffn] x [ffn, hidden]` (about half a Llama layer's FLOPs, so hiding the
  load behind it is the harder case), and a layer-by-layer forward of those matmuls with the copier's loads
  (attention waits through `wait_layer`), against compute alone: the load time left exposed.

Targets (`docs/activation-memory.md`): load bandwidth >= 80% of pinned H2D; per-layer load hidden behind compute for
prompts >= 4k tokens (load per layer below compute per layer, and at most one layer's load left exposed: the first
layer is loaded before any compute can start). The defaults are Llama-3-8B's shapes in bfloat16.

Without CUDA it exits with status 2 and says so; `--device cpu` is a dry run of the same code on host memory (no
pinning, copies done when issued), for tests; its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from kvcache.block_format import decode_into, encode
from kvcache.copy_engine import CudaStreams, HostStreams, LayerCopier, bits, staging_capacity

TARGET_LOAD_FRACTION = 0.8


@dataclass(frozen=True)
class Settings:
    """What one run measures; recorded in its JSON line."""

    device: str = "cuda"  # "cpu" for a dry run of the same code
    tokens: int = 4096  # prompt length whose KV is loaded
    layers: int = 32  # Llama-3-8B's shapes by default
    kv_heads: int = 8
    head_dim: int = 128
    block_size: int = 16  # tokens per KV block
    hidden: int = 4096  # the compute proxy's matmul shapes
    ffn: int = 14336
    dtype: str = "bfloat16"
    repeats: int = 5  # timed repetitions of each measurement

    @property
    def num_blocks(self) -> int:
        return -(-self.tokens // self.block_size)

    def layer_block_shape(self) -> tuple[int, int, int]:
        """vLLM's block-major layout: `[kv_heads, block_size, 2 * head_dim]` per block and layer."""
        return (self.kv_heads, self.block_size, 2 * self.head_dim)


class Clock:
    """Elapsed milliseconds of work queued on the device: CUDA events, or the host's clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time(self, work: Callable[[], None], stream=None) -> float:
        if not self.cuda:
            started = time.perf_counter()
            work()
            return 1000 * (time.perf_counter() - started)
        stream = stream or torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        work()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end)

    def median(self, work: Callable[[], None], repeats: int, stream=None) -> float:
        self.time(work, stream)  # warm-up
        return statistics.median(self.time(work, stream) for _ in range(repeats))


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms / 1000) / 1e9 if ms > 0 else float("inf")


def make_layers(settings: Settings, device: torch.device) -> list[torch.Tensor]:
    """`layers` paged caches with twice the prompt's blocks, filled with random bits."""
    shape = (2 * settings.num_blocks, *settings.layer_block_shape())
    dtype = getattr(torch, settings.dtype)
    layers = []
    for _ in range(settings.layers):
        layer = torch.empty(shape, dtype=dtype, device=device)
        bits(layer).copy_(torch.randint(-100, 100, shape, device=device).to(bits(layer).dtype))
        layers.append(layer)
    return layers


def measure_links(settings: Settings, device: torch.device, clock: Clock) -> dict[str, float]:
    """Pinned H2D and D2H bandwidth for one prompt's KV of every layer."""
    nbytes = settings.num_blocks * settings.layers * int(np.prod(settings.layer_block_shape())) * \
        torch.empty(0, dtype=getattr(torch, settings.dtype)).element_size()
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=device.type == "cuda")
    on_device = torch.empty(nbytes, dtype=torch.uint8, device=device)
    h2d = clock.median(lambda: on_device.copy_(host, non_blocking=True), settings.repeats)
    d2h = clock.median(lambda: host.copy_(on_device, non_blocking=True), settings.repeats)
    return {"link_bytes": nbytes, "h2d_gbps": gbps(nbytes, h2d), "d2h_gbps": gbps(nbytes, d2h),
            "host_pinned": host.is_pinned() if device.type == "cuda" else False}


def measure_copier(settings: Settings, device: torch.device, clock: Clock) -> dict[str, float]:
    """The copier's load and save bandwidth, the host's decode rate, and compute per layer with and without loads."""
    streams = CudaStreams(device, timing=True) if device.type == "cuda" else HostStreams()
    layers = make_layers(settings, device)
    capacity = staging_capacity(settings.tokens, 1, settings.block_size, layers[0][0].nbytes * len(layers))
    copier = LayerCopier(layers, streams, capacity)
    block_ids = list(range(settings.num_blocks, 2 * settings.num_blocks))[:capacity]
    layer_bytes = len(block_ids) * layers[0][0].nbytes
    result: dict[str, float] = {"staging_capacity_blocks": capacity, "blocks_loaded": len(block_ids),
                                "staging_pinned": all(slot.rows.is_pinned() for slot in copier.load_ring._free)}

    def load() -> None:  # staging already holds bytes: the copies alone
        copier.load(block_ids, lambda i, out: True)
        copier.finish_step()

    load_ms = [_layer_span_ms(copier, load, clock) for _ in range(settings.repeats + 1)][1:]
    per_layer = statistics.median(load_ms) / max(1, settings.layers - 1)
    result.update(load_ms_per_layer=per_layer, copier_load_gbps=gbps(layer_bytes, per_layer))
    result.update(_measure_saves(copier, block_ids, layer_bytes * settings.layers, clock, settings.repeats))
    result.update(_measure_decode(copier, settings, layers))
    weights = _compute_proxy(settings, device)
    result["compute_ms_per_layer"] = clock.median(weights, settings.repeats)
    compute_only = clock.median(lambda: [weights() for _ in layers], settings.repeats)

    def forward_with_loads() -> None:
        copier.load(block_ids, lambda i, out: True)
        for layer_index in range(settings.layers):
            copier.wait_layer(layer_index)
            weights()
        copier.finish_step()

    overlapped = clock.median(forward_with_loads, settings.repeats)
    load_total = per_layer * settings.layers
    result.update(compute_only_ms=compute_only, overlapped_ms=overlapped, serial_ms=compute_only + load_total,
                  exposed_load_ms=max(0.0, overlapped - compute_only),
                  hidden_fraction=min(1.0, max(0.0, 1 - (overlapped - compute_only) / load_total)))
    return result


def _layer_span_ms(copier: LayerCopier, load: Callable[[], None], clock: Clock) -> float:
    """Device time from the first layer's copies done to the last's (on the CPU: the whole load)."""
    if not clock.cuda:
        return clock.time(load) * (len(copier.layers) - 1) / len(copier.layers)
    load()
    copier.layer_events[-1].synchronize()
    return copier.layer_events[0].elapsed_time(copier.layer_events[-1])


def _measure_saves(copier: LayerCopier, block_ids: list[int], nbytes: int, clock: Clock,
                   repeats: int) -> dict[str, float]:
    def save() -> None:
        for layer_index in range(len(copier.layers)):
            copier.save_layer(layer_index, block_ids)
        saved = copier.finish_saves()
        saved.wait()
        saved.release()

    return {"copier_save_gbps": gbps(nbytes, clock.median(save, repeats))}


def _measure_decode(copier: LayerCopier, settings: Settings, layers: list[torch.Tensor]) -> dict[str, float]:
    """Stored blocks (format-checked, checksummed) decoded into the pinned staging by the host, as a load does."""
    count = min(copier.capacity, settings.num_blocks)
    block = np.random.default_rng(0).integers(0, 2**15, size=copier.block_shape, dtype=np.int64)
    stored = encode(block.astype(bits(layers[0]).numpy().dtype), settings.dtype, "NHD")
    slot = copier.load_ring.acquire()
    started = time.perf_counter()
    for position in range(count):
        decode_into(stored, slot.scatter(position), settings.dtype, "NHD")
    seconds = time.perf_counter() - started
    copier.load_ring.release(slot)
    return {"host_decode_gbps": count * copier.block_bytes / seconds / 1e9}


def _compute_proxy(settings: Settings, device: torch.device) -> Callable[[], torch.Tensor]:
    dtype = getattr(torch, settings.dtype) if device.type == "cuda" else torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((settings.tokens, settings.hidden), dtype=dtype, device=device, generator=generator)
    up = torch.randn((settings.hidden, settings.ffn), dtype=dtype, device=device, generator=generator) / 64
    down = torch.randn((settings.ffn, settings.hidden), dtype=dtype, device=device, generator=generator) / 64
    return lambda: (x @ up) @ down


def run(settings: Settings) -> dict:
    device = torch.device(settings.device)
    clock = Clock(device)
    result = {**measure_links(settings, device, clock), **measure_copier(settings, device, clock)}
    result["load_fraction_of_h2d"] = result["copier_load_gbps"] / result["h2d_gbps"]
    result["meets_load_bandwidth"] = result["load_fraction_of_h2d"] >= TARGET_LOAD_FRACTION
    result["meets_hidden_load"] = (result["load_ms_per_layer"] < result["compute_ms_per_layer"]
                                   and result["exposed_load_ms"] <= 1.5 * result["load_ms_per_layer"])
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in result.items()}


def describe_device(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"host CPU dry run (torch {torch.__version__}): no figure here says anything about a GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Settings()
    parser.add_argument("--device", choices=("cuda", "cpu"), default=defaults.device)
    for name in ("tokens", "layers", "kv_heads", "head_dim", "block_size", "hidden", "ffn", "repeats"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=defaults.dtype)
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.gpu_check: CUDA is not available to torch here (no GPU, or a CPU build of torch "
              f"{torch.__version__}); run it on a GPU machine, or pass --device cpu for a dry run", file=sys.stderr)
        return 2
    settings = Settings(**{name: getattr(args, name) for name in Settings.__dataclass_fields__})
    result = run(settings)
    print(f"device: {describe_device(settings.device)}")
    rows = (("pinned H2D", f"{result['h2d_gbps']:.1f} GB/s"), ("pinned D2H", f"{result['d2h_gbps']:.1f} GB/s"),
            ("copier load", f"{result['copier_load_gbps']:.1f} GB/s = {100 * result['load_fraction_of_h2d']:.0f}% "
                            f"of H2D (target >= {100 * TARGET_LOAD_FRACTION:.0f}%)"),
            ("copier save", f"{result['copier_save_gbps']:.1f} GB/s"),
            ("host decode", f"{result['host_decode_gbps']:.1f} GB/s"),
            ("load per layer", f"{result['load_ms_per_layer']:.3f} ms"),
            ("compute per layer", f"{result['compute_ms_per_layer']:.3f} ms ({settings.tokens} tokens)"),
            ("forward: compute only / with loads / serial",
             f"{result['compute_only_ms']:.2f} / {result['overlapped_ms']:.2f} / {result['serial_ms']:.2f} ms"),
            ("load hidden", f"{100 * result['hidden_fraction']:.0f}% (exposed {result['exposed_load_ms']:.3f} ms)"))
    for label, value in rows:
        print(f"  {label:<44} {value}")
    print(f"  targets: load bandwidth {'met' if result['meets_load_bandwidth'] else 'MISSED'}, "
          f"load hidden behind compute {'met' if result['meets_hidden_load'] else 'MISSED'}")
    if args.json:
        print(json.dumps({"bench": "gpu_check", "device_name": describe_device(settings.device),
                          "settings": asdict(settings), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
