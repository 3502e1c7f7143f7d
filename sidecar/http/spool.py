"""A streamed JSON Lines request body (an import) spooled to a temporary file as it arrives, so a body larger than
the sidecar's body limit is never held in memory: memory grows with one chunk and the line being read, and the
file with at most `max_records` + 1 non-blank lines of at most `max_line_bytes` each. A line past either bound
stops the upload at once, with the error naming that line (the same rules `textual.transfer` checks again).
"""

from __future__ import annotations

from typing import IO, AsyncIterator

import anyio

from textual.errors import InvalidMemoryError
from textual.transfer import check_record_count

FLUSH_BYTES = 1 << 20  # written to the file in a worker thread once this much is buffered


class _LineCounter:
    """The line being read: its number, its length so far, and whether it holds more than whitespace."""

    def __init__(self, max_line_bytes: int, max_records: int | None) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_records = max_records
        self.number, self.length, self.is_blank, self.non_blank = 1, 0, True, 0

    def feed(self, chunk: bytes) -> None:
        """Account for `chunk`; InvalidMemoryError naming the line that is too long or past the record cap."""
        *ended, rest = chunk.split(b"\n")
        for segment in ended:
            self._grow(segment)
            self.number, self.length, self.is_blank = self.number + 1, 0, True
        self._grow(rest)

    def _grow(self, segment: bytes) -> None:
        self.length += len(segment)
        if self.length > self.max_line_bytes:
            raise InvalidMemoryError(f"line {self.number}", f"is over {self.max_line_bytes} bytes, the limit of one "
                                                            "line of an export")
        if self.is_blank and segment.strip():
            self.is_blank = False
            self.non_blank += 1
            check_record_count(self.non_blank - 1, self.number, self.max_records)  # the first line is the header


async def spool_lines(chunks: AsyncIterator[bytes], file: IO[bytes], max_line_bytes: int,
                      max_records: int | None) -> None:
    """Write the body `chunks` to `file`, checking each line's length and the number of record lines as they
    arrive."""
    counter = _LineCounter(max_line_bytes, max_records)
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
