"""The export format of memories: JSON Lines (UTF-8, one JSON object per line, keys sorted, no whitespace, `\\n`).

Line 1, the header: `{"dim", "embedding_model", "format": "memsidecar.memories", "vectors", "version": 1}`:
`embedding_model` is the identity of the model that made the vectors (`Embedder.identity`), `dim` their length, and
`vectors` whether records carry them.
Every further line, one memory: `{"history": [...], "memory": {...}, "vector"?: "..."}`:
- `memory`: the fields of the memory record (`textual.record`: keys sorted, `type` and `tier` as names, `accesses`
  and `expires_at` only when set) without `tenant` and `v`: an export names no tenant, an import writes the
  importing tenant.
- `history`: the memory's versions, oldest first, each as `textual.history.version_json` writes it.
- `vector`: the embedding as base64 of its little-endian float32 bytes (`textual.record.encode_vector`), present
  when the header says `vectors`; an importer uses it only when its own embedding model has the header's identity.
A line is at most `MAX_LINE_BYTES` long (the importer refuses a longer one). Decoding checks the shape and names the
line and field at fault; what the values may be is the importer's check (`textual.transfer`), as for any memory
written.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from textual.history import Version, version_from_json, version_json
from textual.memory import Memory
from textual.record import decode_memory, decode_vector, encode_memory, encode_vector

FORMAT = "memsidecar.memories"
FORMAT_VERSION = 1
MAX_LINE_BYTES = 16 * 1024 * 1024  # one record: a memory with its up to 200 versions (each may hold old content)


class ExportFormatError(ValueError):
    """A line that is not in the export format; `field` names the line and what is wrong in it."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.field = f"line {line}"


@dataclass(frozen=True)
class Header:
    """What the first line of an export says about the records after it."""

    embedding_model: str  # the identity of the model the vectors come from (`Embedder.identity`)
    dim: int  # their dimension
    vectors: bool  # whether record lines carry vectors (else an import embeds the contents)


@dataclass(frozen=True)
class ExportedMemory:
    """One record line: a memory (its `tenant` is the exporting or importing one), its versions and its vector."""

    memory: Memory
    history: tuple[Version, ...] = ()
    vector: np.ndarray | None = None


def encode_header(header: Header) -> bytes:
    return _line({"format": FORMAT, "version": FORMAT_VERSION, "embedding_model": header.embedding_model,
                  "dim": header.dim, "vectors": header.vectors})


def decode_header(data: bytes) -> Header:
    """The header of an export; ExportFormatError (line 1) when `data` is not one this module writes."""
    body = _object(data, 1)
    if body.get("format") != FORMAT or body.get("version") != FORMAT_VERSION:
        raise ExportFormatError(1, f"not a {FORMAT} version {FORMAT_VERSION} header")
    model, dim, vectors = body.get("embedding_model"), body.get("dim"), body.get("vectors")
    if not isinstance(model, str) or not isinstance(dim, int) or isinstance(dim, bool) or dim < 1 or \
            not isinstance(vectors, bool):
        raise ExportFormatError(1, "the header needs embedding_model (a string), dim (an integer >= 1), vectors "
                                   "(true or false)")
    return Header(model, dim, vectors)


def encode_record(item: ExportedMemory) -> bytes:
    memory = json.loads(encode_memory(item.memory))
    del memory["tenant"], memory["v"]
    body: dict[str, Any] = {"memory": memory, "history": [version_json(v) for v in item.history]}
    if item.vector is not None:
        body["vector"] = base64.b64encode(encode_vector(item.vector)).decode()
    return _line(body)


def decode_record(data: bytes, line: int, tenant: str, header: Header) -> ExportedMemory:
    """The memory on record line `line`, as a memory of `tenant`; ExportFormatError naming what is wrong."""
    body = _object(data, line)
    memory, history = body.get("memory"), body.get("history", [])
    if not isinstance(memory, dict) or not isinstance(history, list) or set(body) - {"memory", "history", "vector"}:
        raise ExportFormatError(line, "a record holds `memory` (an object), `history` (a list) and maybe `vector`")
    try:
        decoded = decode_memory(json.dumps({**memory, "tenant": tenant, "v": 1}).encode())
        versions = tuple(version_from_json(version) for version in history)
        vector = _vector(body.get("vector"), header)
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportFormatError(line, f"not a memory record: {exc}") from None
    return ExportedMemory(decoded, versions, vector)


def _vector(value: object, header: Header) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("vector: must be base64 of little-endian float32 bytes")
    vector = decode_vector(base64.b64decode(value, validate=True))
    if len(vector) != header.dim or not np.isfinite(vector).all():
        raise ValueError(f"vector: must hold {header.dim} finite float32 values, as the header says")
    return vector


def _object(data: bytes, line: int) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportFormatError(line, f"not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ExportFormatError(line, "must be a JSON object")
    return body


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
