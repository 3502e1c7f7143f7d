"""Model and adapter fingerprints: which weights computed a KV block, independent of where they live.

The fingerprint hashes `config.json` (canonical JSON) and the full content of every weight file, by relative name.
Hashing content rather than metadata matters: two models with one shape (a base model and its fine-tune, or two
seeds of a generated model) have identical file sizes and safetensors headers, and a metadata-only fingerprint
would let one load the other's KV. Hashing is cached by (path, size, mtime, inode) in an optional JSON file, so
restarts do not re-read the weights. The path is only the cache's key; it never enters a fingerprint.

`adapter_id(name, adapter_dir)` is the `Namespace.adapter` of a LoRA adapter: "name@" + the SHA-256 hex of the
adapter's config and weights, computed the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHUNK = 8 << 20


def _file_digest(path: Path, cache: dict[str, str]) -> str:
    stat = path.stat()
    cache_key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    if cache_key not in cache:
        digest = hashlib.blake2b(digest_size=32)
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
        cache[cache_key] = digest.hexdigest()
    return cache[cache_key]


def model_fingerprint(model_dir: Path, cache_file: Path | None = None) -> str:
    """A 32-hex-digit fingerprint of the model in `model_dir` (its config.json and weight files)."""
    digest = hashlib.blake2b(digest_size=16, person=b"msc-model-v1")
    _hash_directory(digest, model_dir, "config.json", cache_file)
    return digest.hexdigest()


def adapter_id(name: str, adapter_dir: Path, cache_file: Path | None = None) -> str:
    """`name@<sha256 hex>` of the LoRA adapter in `adapter_dir` (its adapter_config.json and weight files)."""
    digest = hashlib.sha256(b"msc-adapter-v1\0")
    _hash_directory(digest, adapter_dir, "adapter_config.json", cache_file)
    return f"{name}@{digest.hexdigest()}"


def _hash_directory(digest, directory: Path, config_name: str, cache_file: Path | None) -> None:
    config = json.loads((directory / config_name).read_text())
    cache = _read_cache(cache_file)
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    weights = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for path in weights:
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + _file_digest(path, cache).encode())
    _write_cache(cache_file, cache)


def _read_cache(cache_file: Path | None) -> dict[str, str]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        return json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache_file: Path | None, cache: dict[str, str]) -> None:
    if cache_file is None:
        return
    temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(cache, sort_keys=True))
    os.replace(temporary, cache_file)
