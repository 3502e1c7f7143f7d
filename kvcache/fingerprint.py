"""Model fingerprints: which weights computed a KV block, independent of where the model lives.

The fingerprint hashes `config.json` (canonical JSON) and the full content of every weight file, by relative name.
Hashing content rather than metadata matters: two models with one shape (a base model and its fine-tune, or two
seeds of a generated model) have identical file sizes and safetensors headers. Hashing is cached by
(name, size, mtime, inode) in an optional JSON file, so restarts do not re-read the weights.
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
    """A 32-hex-digit fingerprint of the model in `model_dir`."""
    config = json.loads((model_dir / "config.json").read_text())
    cache = _read_cache(cache_file)
    digest = hashlib.blake2b(digest_size=16, person=b"msc-model-v1")
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    weights = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for path in weights:
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0" + _file_digest(path, cache).encode())
    _write_cache(cache_file, cache)
    return digest.hexdigest()


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
