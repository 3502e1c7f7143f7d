"""Content digests of a weights directory (a model or a LoRA adapter): what identifies its weights, never its path.

`hash_weights_directory(digest, directory, config_name)` feeds a hashlib object, in this order:
1. the config file `config_name`, parsed and written again as canonical JSON (keys sorted, separators "," and ":",
   non-ASCII escaped), UTF-8;
2. for every file at any depth below `directory` whose suffix is in `WEIGHT_SUFFIXES`, in `Path` order (component
   by component, so `a/b` sorts before `a-b`): its path relative to `directory`, UTF-8, then one NUL byte, then the
   64 hex digits (ASCII) of the BLAKE2b-256 of its full content (`file_digest`).
Other files (README.md, tokenizer files) do not count. The caller picks the hash and its domain tag
(`kvcache.fingerprint`: BLAKE2b-128 for models, SHA-256 after `ADAPTER_TAG` for adapters); `adapters.validation`
computes the adapter digest through the same function, so the KV cache's adapter namespace and the registry's
adapter SHA-256 are one value. A test pins the bytes (tests/memcore/test_digest.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
ADAPTER_TAG = b"msc-adapter-v1\0"  # what an adapter's SHA-256 starts from
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's name for an adapter's config
CHUNK = 8 << 20


def file_digest(path: Path) -> str:
    """The BLAKE2b-256 hex of the file's content, read in chunks."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_weights_directory(digest, directory: Path, config_name: str,
                           digest_file: Callable[[Path], str] = file_digest) -> None:
    """Feed `digest` the config and weight files of `directory` as the module docstring states. `digest_file` gives a
    weight file's BLAKE2b-256 hex; a caller may pass a cached one, which must return what `file_digest` returns."""
    config = json.loads((directory / config_name).read_text())
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    weights = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for path in weights:
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + digest_file(path).encode())


def adapter_digest(directory: Path, digest_file: Callable[[Path], str] = file_digest) -> str:
    """The SHA-256 hex of a LoRA adapter directory: `ADAPTER_TAG`, then its `ADAPTER_CONFIG` and weights as above."""
    digest = hashlib.sha256(ADAPTER_TAG)
    hash_weights_directory(digest, directory, ADAPTER_CONFIG, digest_file)
    return digest.hexdigest()
