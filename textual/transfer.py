"""Export and import of one tenant's memories in the JSON Lines format of `textual.export_format`.

Export: the header, then every live (not expired) memory of the tenant, or of one user, in key order, with its
versions and, when asked, its vector; read in short transactions, so an export never blocks writers.
Import rules:
- every line is parsed and every value checked (as `add` checks it) before anything is written: a bad line refuses
  the whole import, naming the line and the field; a line is at most `MAX_LINE_BYTES` long, and an import may be
  capped at a number of memories (the room left in the tenant's quota);
- the export is read twice (check, then write) and never held whole: memory grows with one batch and the ids;
- the memories are written to the importing tenant, whatever tenant exported them, and count against its quota;
- ids are kept; an id the tenant already holds gets a new id, and the `supersedes` / `superseded_by` links of the
  imported memories follow the new ids (`ImportReport.remapped` lists them); an id repeated in the file is refused;
- vectors in the file are used when the store's embedding model has the identity the header names; otherwise, or
  for a record without one, the content is embedded again;
- each memory keeps its exported versions and gains an `import` version by the importing tenant.
Writes go in batches of `IMPORT_BATCH`, each one durable transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import IO, Callable, Iterable, Iterator

import numpy as np

from textual.errors import InvalidMemoryError
from textual.export_format import (MAX_LINE_BYTES, ExportedMemory, ExportFormatError, Header, decode_header,
                                   decode_record, encode_header, encode_record)
from textual.history import MAX_VERSIONS, ChangeKind
from textual.memory import (Memory, check_content, check_identifier, check_importance, check_metadata, check_owner,
                            check_source, check_strength, check_time, is_expired)
from textual.messages import embedding_text

IMPORT_BATCH = 256
LineSource = Iterable[bytes] | Callable[[], Iterable[bytes]]
LINKS = ("supersedes", "superseded_by")


@dataclass(frozen=True)
class ImportReport:
    """What an import did: memories written, how many were embedded again, and old id -> new id of those whose id
    was taken."""

    imported: int
    reembedded: int
    remapped: dict[str, str]


def export_lines(handle, user: str | None = None, vectors: bool = True) -> Iterator[bytes]:
    """The tenant's export, line by line (see the module docstring)."""
    store, tenant = handle._store, handle.tenant
    user = None if user is None else check_identifier("user", user)
    yield encode_header(Header(store.embedder.identity, store.embedder.dim, vectors))
    now = store.clock()
    for memory in store.db.each_memory(tenant):
        if (user is not None and memory.user != user) or is_expired(memory, now):
            continue
        history = store.db.history(tenant, memory.id, limit=MAX_VERSIONS)
        vector = store.db.get_vector(tenant, memory.id) if vectors else None
        yield encode_record(ExportedMemory(memory, tuple(history), vector))


def import_lines(handle, source: LineSource, progress: Callable[[int], None] | None = None,
                 max_records: int | None = None) -> ImportReport:
    """Import an export into the tenant (see the rules above); `progress` is told how many memories each batch
    wrote. `source` is the export's lines, or a function that returns them afresh (a file, a spooled request body):
    it is read twice, once to check every line and once to write, so a large export is never held in memory.
    `max_records` (None: no cap) refuses an export of more memories, naming the first line past it."""
    reread = source if callable(source) else (lambda lines=list(source): lines)
    checked = _checked_export(handle, reread(), max_records)
    reembedded = imported = 0
    for batch in _batches(_records(handle, reread(), checked)):
        store = handle._store
        store.admit(handle.tenant, [item.memory.content for item in batch])
        vectors, embedded = _vectors(store, handle.tenant, batch)
        with store.tenant_lock(handle.tenant):
            store.write(handle.tenant, [item.memory for item in batch], vectors, ChangeKind.IMPORT,
                        histories={item.memory.id: item.history for item in batch})
        reembedded += embedded
        imported += len(batch)
        if progress is not None:
            progress(len(batch))
    return ImportReport(imported, reembedded, checked.remapped)


def file_source(file: IO[bytes]) -> Callable[[], Iterable[bytes]]:
    """An import source over an open binary file (an export on disk, a spooled request body): its lines from the
    start, each time it is called."""
    def lines() -> Iterable[bytes]:
        file.seek(0)
        return file

    return lines


def check_record_count(records: int, line: int, max_records: int | None) -> None:
    """Refuse the `records`-th memory of an import (on line `line`) when it is past `max_records`."""
    if max_records is not None and records > max_records:
        raise InvalidMemoryError(f"line {line}", f"the import holds more than {max_records} memories, the room left "
                                                 "in this tenant's memory quota; import fewer or raise the quota")


@dataclass(frozen=True)
class _CheckedExport:
    """What the checking pass learnt: the header, whether its vectors are usable here, and the ids to remap."""

    header: Header
    same_model: bool
    remapped: dict[str, str]


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines; a line longer than `MAX_LINE_BYTES` is refused, named."""
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_BYTES:
            raise InvalidMemoryError(f"line {number}", f"is {len(line)} bytes, the limit is {MAX_LINE_BYTES}")
        if line.strip():
            yield number, line


def _checked_export(handle, lines: Iterable[bytes], max_records: int | None) -> _CheckedExport:
    """The first pass: every line decoded and its values checked, ids unique in the file, the count capped."""
    numbered = _numbered(lines)
    first = next(numbered, None)
    if first is None:
        raise InvalidMemoryError("body", "an export starts with its header line; the body is empty")
    header = _checked(lambda: decode_header(first[1]))
    store, seen, remapped = handle._store, {}, {}
    for number, line in numbered:
        check_record_count(len(seen) + 1, number, max_records)
        memory = _checked(lambda: decode_record(line, number, handle.tenant, header)).memory
        _check_values(memory, number, store.max_content_chars)
        if memory.id in seen:
            raise InvalidMemoryError(f"line {number}: id", f"{memory.id!r} repeats the id of line {seen[memory.id]}")
        seen[memory.id] = number
        if store.db.get(handle.tenant, memory.id) is not None:
            remapped[memory.id] = uuid.uuid4().hex
    return _CheckedExport(header, header.embedding_model == store.embedder.identity, remapped)


def _records(handle, lines: Iterable[bytes], checked: _CheckedExport) -> Iterator[ExportedMemory]:
    """The second pass: each record as it is written (new ids and links applied; vectors dropped when the model
    differs)."""
    numbered = _numbered(lines)
    next(numbered, None)
    for number, line in numbered:
        item = _relinked(_checked(lambda: decode_record(line, number, handle.tenant, checked.header)),
                         checked.remapped)
        yield item if checked.same_model else replace(item, vector=None)


def _batches(items: Iterable[ExportedMemory]) -> Iterator[list[ExportedMemory]]:
    batch: list[ExportedMemory] = []
    for item in items:
        batch.append(item)
        if len(batch) == IMPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _checked(decode):
    try:
        return decode()
    except ExportFormatError as exc:
        raise InvalidMemoryError(exc.field, str(exc).split(": ", 1)[1]) from None


def _check_values(memory: Memory, line: int, max_chars: int) -> None:
    """Every value of an imported memory as `add` would check it; the error names the line."""
    try:
        check_identifier("id", memory.id)
        for name, value in (("user", memory.user), ("agent", memory.agent), ("run", memory.run)):
            if value is not None:
                check_identifier(name, value)
        check_owner(memory.user, memory.agent)
        if memory.kb_id is not None:
            check_identifier("kb_id", memory.kb_id)
        check_content(memory.content, max_chars)
        check_metadata(memory.metadata)
        check_source(memory.source)
        check_importance(memory.importance)
        check_strength(memory.strength)
        for name in ("created_at", "updated_at", "last_access_at"):
            check_time(name, getattr(memory, name))
        if memory.expires_at is not None:
            check_time("expires_at", memory.expires_at)
        for accessed in memory.accesses:
            check_time("accesses", accessed)
        if not isinstance(memory.access_count, int) or isinstance(memory.access_count, bool) or \
                memory.access_count < 0:
            raise InvalidMemoryError("access_count", "must be an integer >= 0")
        if memory.created_at > memory.updated_at:
            raise InvalidMemoryError("updated_at", "must not be before created_at")
    except InvalidMemoryError as exc:
        raise InvalidMemoryError(f"line {line}: {exc.field}", str(exc).split(": ", 1)[1]) from None


def _relinked(item: ExportedMemory, remapped: dict[str, str]) -> ExportedMemory:
    metadata = {key: remapped.get(value, value) if key in LINKS and isinstance(value, str) else value
                for key, value in item.memory.metadata.items()}
    memory = replace(item.memory, id=remapped.get(item.memory.id, item.memory.id), metadata=metadata)
    return replace(item, memory=memory)


def _vectors(store, tenant: str, batch: list[ExportedMemory]) -> tuple[np.ndarray, int]:
    """One row per memory: its exported vector, or its content embedded again; and how many were embedded."""
    missing = [i for i, item in enumerate(batch) if item.vector is None]
    embedded = store.embedder.embed([_embedding_text(batch[i].memory) for i in missing], owner=tenant) \
        if missing else []
    rows = [item.vector for item in batch]
    for i, vector in zip(missing, embedded):
        rows[i] = vector
    return np.stack(rows).astype(np.float32), len(missing)


def _embedding_text(memory: Memory) -> str:
    speaker = memory.metadata.get("speaker")
    return embedding_text(str(speaker), memory.content, None) if speaker else memory.content
