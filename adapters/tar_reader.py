"""A bounded reader of tar streams (ustar, GNU long names, PAX) for archives nobody vouches for.

`tarfile` reads the body of a GNU long-name or PAX header whole, at whatever size its 512-byte header declares,
before a caller sees anything: a 509 KiB .tar.gz declaring a 512 MiB long name costs 512 MiB of memory and a
minute of inflating. This reader holds these rules instead:
- an extended header's body (GNU 'L' or 'K', PAX 'x' or 'g') is read only after its declared size is checked: all
  extended headers of an archive together (512-byte blocks included) hold at most `max_header_bytes`;
- a member's data is never read here: `entries` yields each member with its declared size before skipping its data,
  so the caller refuses a member too large (or of a forbidden kind) before a byte of it is inflated;
- the stream is read forward once, and ends at the first all-zero block (as `tarfile` does).
Hence the bytes inflated while listing are at most `max_header_bytes` plus, per member the caller accepted, one
header block and its padded data.

Header blocks are parsed by `tarfile.TarInfo.frombuf` (checksum, ustar prefix, base-256 sizes), which reads
nothing beyond the block it is given. Only the PAX keys that change a member's identity are honoured (`path`,
`size`); `linkpath` and GNU sparse keys are refused, since a member they describe is not a plain file.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from adapters.errors import TOO_LARGE, InvalidAdapterError

BLOCK = 512
_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL = b"L", b"K", b"x", b"g"
_EXTENDED = (_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL)
_REGULAR, _DIRECTORY = (tarfile.REGTYPE, tarfile.AREGTYPE), tarfile.DIRTYPE
_IGNORED_PAX_KEYS = ("mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment", "hdrcharset", "charset")


@dataclass(frozen=True)
class TarEntry:
    """One member: its name, its tar type flag, its size, and where its data starts in the (inflated) stream."""

    name: str
    kind: bytes
    size: int
    offset: int

    @property
    def is_file(self) -> bool:
        return self.kind in _REGULAR

    @property
    def is_dir(self) -> bool:
        return self.kind == _DIRECTORY


@dataclass
class _Pending:
    """What extended headers say about the next member, and the header bytes spent so far."""

    name: str | None = None
    size: int | None = None
    header_bytes: int = 0


def entries(stream: BinaryIO, max_header_bytes: int) -> Iterator[TarEntry]:
    """The members of the tar `stream`, one at a time; InvalidAdapterError for a corrupt or over-large header.

    A member's data is skipped only when the caller asks for the next member."""
    pending = _Pending()
    while (info := _next_header(stream)) is not None:
        if info.type in _EXTENDED:
            _read_extended(stream, info, pending, max_header_bytes)
            continue
        entry = TarEntry(pending.name or info.name, info.type, _member_size(info, pending), stream.tell())
        pending = _Pending(header_bytes=pending.header_bytes)
        yield entry
        _skip(stream, _padded(entry.size))


def read_member(stream: BinaryIO, entry: TarEntry) -> BinaryIO:
    """A reader of `entry`'s data in `stream` (seeked there; a gzip stream inflates forward to reach it)."""
    stream.seek(entry.offset)
    return _Slice(stream, entry.size)


def _next_header(stream: BinaryIO) -> tarfile.TarInfo | None:
    block = stream.read(BLOCK)
    if not block or block == bytes(BLOCK):
        return None  # end of archive (a stream without the end blocks ends here too, as with `tarfile`)
    if len(block) < BLOCK:
        raise InvalidAdapterError("archive", "the tar archive is corrupt: it ends inside a header block")
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    except (tarfile.HeaderError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidAdapterError("archive", f"the tar archive is corrupt: bad header block ({exc})") from None
    if info.size < 0:
        raise InvalidAdapterError(info.name or "archive", "the tar header declares a negative size")
    return info


def _read_extended(stream: BinaryIO, info: tarfile.TarInfo, pending: _Pending, max_header_bytes: int) -> None:
    """Read one extended header's body, after checking its declared size against what is left of the budget."""
    pending.header_bytes += BLOCK + _padded(info.size)
    if pending.header_bytes > max_header_bytes:
        raise InvalidAdapterError("archive", f"the tar archive's extended headers (long names, PAX) declare "
                                             f"{pending.header_bytes} bytes; at most {max_header_bytes} are accepted",
                                  TOO_LARGE)
    body = _read_exact(stream, info.size)
    _skip(stream, _padded(info.size) - info.size)
    if info.type == _LONG_NAME:
        pending.name = _decode(body.split(b"\0", 1)[0])
    elif info.type == _PAX:
        _apply_pax(_pax_records(body), pending)
    elif info.type == _PAX_GLOBAL:
        _refuse_identity_keys(_pax_records(body), "a global PAX header")
    # _LONG_LINK: the link target is dropped; the member it belongs to is a link, which the caller refuses


def _apply_pax(records: dict[str, str], pending: _Pending) -> None:
    for key, value in records.items():
        if key == "path":
            pending.name = value
        elif key == "size":
            if not value.isdigit() or len(value) > 20:
                raise InvalidAdapterError("archive", f"the PAX header's size {value[:40]!r} is not a byte count")
            pending.size = int(value)
        elif key not in _IGNORED_PAX_KEYS and not key.startswith(("SCHILY.", "LIBARCHIVE.")):
            raise InvalidAdapterError("archive", f"the PAX header key {key[:64]!r} is not accepted (links, sparse "
                                                 "files and other special members cannot hold an adapter)")


def _refuse_identity_keys(records: dict[str, str], where: str) -> None:
    for key in records:
        if key in ("path", "size", "linkpath") or key.startswith("GNU.sparse"):
            raise InvalidAdapterError("archive", f"{where} may not set {key!r}")


def _pax_records(body: bytes) -> dict[str, str]:
    """Key -> value of PAX records `"<length> <key>=<value>\\n"`; refuses a malformed record."""
    records, position = {}, 0
    while position < len(body) and body[position] != 0:
        length_text, space, _ = body[position:position + 21].partition(b" ")
        if not space or not length_text.isdigit() or int(length_text) <= len(length_text) + 1:
            raise InvalidAdapterError("archive", "the tar archive has a malformed PAX header record")
        record = body[position:position + int(length_text)]
        key, equals, value = record[len(length_text) + 1:].partition(b"=")
        if not equals or not record.endswith(b"\n") or position + len(record) > len(body):
            raise InvalidAdapterError("archive", "the tar archive has a malformed PAX header record")
        records[_decode(key)] = _decode(value[:-1])
        position += len(record)
    return records


def _member_size(info: tarfile.TarInfo, pending: _Pending) -> int:
    return info.size if pending.size is None else pending.size


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidAdapterError("archive", "a tar header holds a name that is not UTF-8") from None


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise InvalidAdapterError("archive", "the tar archive is corrupt: it ends inside a member")
    return data


def _skip(stream: BinaryIO, size: int) -> None:
    """Move past `size` bytes (a gzip stream inflates and drops them, a chunk at a time)."""
    if size:
        stream.seek(size, io.SEEK_CUR)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class _Slice(io.RawIOBase):
    """The next `size` bytes of a stream, read-only: reading never goes past the member's end."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._stream.read(wanted)
        if len(data) < wanted:
            raise InvalidAdapterError("archive", "the tar archive is corrupt: it ends inside a member")
        self._left -= len(data)
        return data
