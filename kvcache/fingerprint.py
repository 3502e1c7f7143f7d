"""Model and adapter fingerprints: which weights computed a KV block, independent of where they live.

The fingerprint hashes `config.json` (canonical JSON) and the full content of every weight file, by relative name
(the bytes and their order: `memcore.digest`). Hashing content rather than metadata matters: two models with one
shape (a base model and its fine-tune, or two seeds of a generated model) have identical file sizes and safetensors
headers, and a metadata-only fingerprint would let one load the other's KV. Hashing is cached by (path, size, mtime,
inode) in an optional JSON file, so restarts do not re-read the weights. The path is only the cache's key; it never
enters a fingerprint.

`adapter_id(name, adapter_dir)` is the `Namespace.adapter` of a LoRA adapter: "name@" + the SHA-256 hex of the
adapter's config and weights (`memcore.digest.adapter_digest`, the digest the adapter registry records).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from memcore.digest import adapter_digest, file_digest, hash_weights_directory


def _cached_file_digest(path: Path, cache: dict[str, str]) -> str:
    stat = path.stat()
    cache_key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    if cache_key not in cache:
        cache[cache_key] = file_digest(path)
    return cache[cache_key]


def model_fingerprint(model_dir: Path, cache_file: Path | None = None) -> str:
    """A 32-hex-digit fingerprint of the model in `model_dir` (its config.json and weight files)."""
    digest = hashlib.blake2b(digest_size=16, person=b"msc-model-v1")
    cache = _read_cache(cache_file)
    hash_weights_directory(digest, model_dir, "config.json", lambda path: _cached_file_digest(path, cache))
    _write_cache(cache_file, cache)
    return digest.hexdigest()


def adapter_id(name: str, adapter_dir: Path, cache_file: Path | None = None) -> str:
    """`name@<sha256 hex>` of the LoRA adapter in `adapter_dir` (its adapter_config.json and weight files)."""
    cache = _read_cache(cache_file)
    digest = adapter_digest(adapter_dir, lambda path: _cached_file_digest(path, cache))
    _write_cache(cache_file, cache)
    return f"{name}@{digest}"


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
