"""A streamed JSON Lines request body (an import) spooled to a temporary file as it arrives, so a body larger than
the sidecar's body limit is never held in memory: memory grows with one chunk, and the file stays within `Bounds`
(each line, the non-blank lines after the header, the bytes). A body past a bound stops the upload at once, with
the error naming the line (the line and record bounds are those `textual.transfer` checks again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, AsyncIterator

import anyio

from textual.errors import InvalidMemoryError
from textual.transfer import check_record_count

FLUSH_BYTES = 1 << 20  # written to the file in a worker thread once this much is buffered


@dataclass(frozen=True)
class Bounds:
    """What a spooled body may hold; None: unbounded."""

    line_bytes: int  # one line
    records: int | None = None  # non-blank lines after the first (the header)
    total_bytes: int | None = None  # the whole body


class _LineCounter:
    """The line being read: its number, its length so far, whether it holds more than whitespace, and the body's
    non-blank lines and bytes so far."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.number, self.length, self.is_blank, self.non_blank, self.size = 1, 0, True, 0, 0

    def feed(self, chunk: bytes) -> None:
        """Account for `chunk`; InvalidMemoryError naming the line past a bound."""
        self.size += len(chunk)
        *ended, rest = chunk.split(b"\n")
        for segment in ended:
            self._grow(segment)
            self.number, self.length, self.is_blank = self.number + 1, 0, True
        self._grow(rest)
        if self.bounds.total_bytes is not None and self.size > self.bounds.total_bytes:
            raise InvalidMemoryError(f"line {self.number}", f"the import is over {self.bounds.total_bytes} bytes, "
                                                            "twice the room left in this tenant's memory_bytes quota")

    def _grow(self, segment: bytes) -> None:
        self.length += len(segment)
        if self.length > self.bounds.line_bytes:
            raise InvalidMemoryError(f"line {self.number}", f"is over {self.bounds.line_bytes} bytes, the limit of "
                                                            "one line of an export")
        if self.is_blank and segment.strip():
            self.is_blank = False
            self.non_blank += 1
            check_record_count(self.non_blank - 1, self.number, self.bounds.records)  # line 1 is the header


async def spool_lines(chunks: AsyncIterator[bytes], file: IO[bytes], bounds: Bounds) -> None:
    """Write the body `chunks` to `file`, checking them against `bounds` as they arrive."""
    counter = _LineCounter(bounds)
    pending: list[bytes] = []
    size = 0
    async for chunk in chunks:
        counter.feed(chunk)
        pending.append(chunk)
        size += len(chunk)
        if size >= FLUSH_BYTES:
            await anyio.to_thread.run_sync(file.write, b"".join(pending))
            pending, size = [], 0
    await anyio.to_thread.run_sync(file.write, b"".join(pending))
