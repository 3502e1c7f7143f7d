"""Unpacking an uploaded adapter (a .zip, .tar or .tar.gz, told apart by magic bytes) or copying a local directory.

Whatever the source, the result is a fresh directory holding regular files only, side by side, and nothing is
trusted before it is checked:
- member names are relative, without "..", ".", empty components, backslashes or NUL; no name appears twice;
- members are regular files or directories; links (symbolic or hard), devices and FIFOs are refused;
- at most one top-level folder, stripped; no deeper nesting, and no mix of a folder with top-level files;
- at most `max_members` members; every member and their total within the byte limits, counted while the bytes
  stream (an archive header may lie about sizes, a compressed stream may expand without bound); so the unpacked
  adapter is at most `max_total_bytes`, whatever the compression ratio;
- metadata is bounded before it is parsed: a tar's extended headers (long names, PAX) by `max_header_bytes`, read
  by `adapters.tar_reader` only after their declared sizes are checked (`tarfile` would read them whole), and a
  zip's central directory by its declared entry count and size, checked before `zipfile` parses it; a member name
  is at most `MAX_NAME_BYTES` bytes.
Each refusal is an InvalidAdapterError naming the member (status 413 for sizes, 400 otherwise).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from adapters import tar_reader
from adapters.errors import TOO_LARGE, InvalidAdapterError
from memcore.units import MIB

CHUNK = MIB
MAX_NAME_BYTES = 1024
# a central directory entry: 46 fixed bytes, then a name, an extra field and a comment (64 KiB each at most)
ZIP_DIRECTORY_ENTRY_BYTES = 46 + MAX_NAME_BYTES + 4096
_ZIP_END = struct.Struct("<4s4H2LH")  # end of central directory record
_DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an upload may hold once unpacked."""

    max_total_bytes: int
    max_member_bytes: int | None = None  # None: the total limit
    max_members: int = 16
    max_header_bytes: int = 64 << 10  # a tar's extended headers (long names, PAX), together

    @property
    def member_limit(self) -> int:
        return self.max_total_bytes if self.max_member_bytes is None else self.max_member_bytes


@dataclass(frozen=True)
class _Member:
    """One archive entry: its name as given, its path components, whether it is a directory, its declared size."""

    name: str
    parts: tuple[str, ...]
    is_dir: bool
    size: int
    open: Callable[[], BinaryIO] | None


def unpack_archive(data: bytes, destination: Path, limits: ArchiveLimits) -> list[str]:
    """Unpack `data` into `destination` (created here, must not exist); the file names written, sorted.

    After a refusal `destination` may hold partial files: the caller removes it.
    """
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        _check_zip_directory(data, limits)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return _extract(_zip_members(archive, limits), destination, limits)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise InvalidAdapterError("archive", f"the zip archive is corrupt or encrypted: {exc}") from None
    is_gzip = data[:2] == b"\x1f\x8b"
    if not is_gzip and data[257:262] != b"ustar":
        raise InvalidAdapterError("archive", "unsupported upload format: send a .zip, .tar or .tar.gz file "
                                             "(recognised by content, not by name)")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) if is_gzip else io.BytesIO(data) as stream:
            return _extract(_tar_members(stream, limits), destination, limits)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidAdapterError("archive", f"the tar archive is corrupt: {exc}") from None


def copy_directory(source: Path, destination: Path, limits: ArchiveLimits) -> list[str]:
    """Copy the regular files of `source` (no links, no subdirectories) into `destination`, as for an upload."""
    if not source.is_dir():
        raise InvalidAdapterError("path", f"{source} is not a directory")
    members = []
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidAdapterError(entry.name, "subdirectories are not accepted: the adapter's files must lie "
                                                  "directly in the directory")
        _check_kind(entry.name, stat.S_ISREG(mode))
        path = entry.path
        members.append(_Member(entry.name, (entry.name,), False, entry.stat(follow_symlinks=False).st_size,
                               lambda path=path: _open_no_follow(path)))
        _check_count(len(members), entry.name, limits)
    return _extract(members, destination, limits)


def _check_zip_directory(data: bytes, limits: ArchiveLimits) -> None:
    """Refuse a zip whose central directory declares more entries, or more bytes, than `limits` allow.

    `zipfile` parses the whole central directory into objects of ~10x its size before anyone can count them."""
    end = _zip_end_record(data)
    if end is None:
        raise InvalidAdapterError("archive", "the zip archive is corrupt: no end of central directory record")
    _, _, _, _, entries, directory_bytes, offset, _ = _ZIP_END.unpack_from(data, end)
    has_zip64_locator = data[max(0, end - 20):end].startswith(b"PK\x06\x07")  # zipfile would read sizes there
    if has_zip64_locator or entries == 0xFFFF or directory_bytes == 0xFFFFFFFF or offset == 0xFFFFFFFF:
        raise InvalidAdapterError("archive", "zip64 archives are not accepted: an adapter is far below 4 GiB")
    _check_count(entries, "archive", limits)
    if directory_bytes > max(entries, 1) * ZIP_DIRECTORY_ENTRY_BYTES:
        raise InvalidAdapterError("archive", f"the zip central directory declares {directory_bytes} bytes for "
                                             f"{entries} entries; at most {ZIP_DIRECTORY_ENTRY_BYTES} bytes per "
                                             "entry are accepted", TOO_LARGE)


def _zip_end_record(data: bytes) -> int | None:
    """The offset of the end of central directory record, found as `zipfile` finds it (last one wins)."""
    if len(data) >= _ZIP_END.size and data[-_ZIP_END.size:-_ZIP_END.size + 4] == b"PK\x05\x06":
        return len(data) - _ZIP_END.size
    start = data.rfind(b"PK\x05\x06", max(0, len(data) - _ZIP_END.size - 0xFFFF))
    return start if start >= 0 and start + _ZIP_END.size <= len(data) else None


def _zip_members(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[_Member]:
    infos = archive.infolist()
    _check_count(len(infos), infos[-1].filename if infos else "", limits)
    members, total = [], 0
    for info in infos:
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type stored (Windows tools, Python's writestr)
        is_dir = info.is_dir()
        _check_kind(info.filename, kind in (0, stat.S_IFREG) or (is_dir and kind == stat.S_IFDIR))
        total += info.file_size  # declared sizes refuse early; _write counts the real bytes
        _check_size(info.filename, info.file_size, total, limits)
        members.append(_Member(info.filename, _parts(info.filename), is_dir, info.file_size,
                               lambda info=info: archive.open(info)))
    return members


def _tar_members(stream: BinaryIO, limits: ArchiveLimits) -> list[_Member]:
    members, total = [], 0
    for entry in tar_reader.entries(stream, limits.max_header_bytes):  # a member is refused before its data is read
        _check_count(len(members) + 1, entry.name, limits)
        _check_kind(entry.name, entry.is_file or entry.is_dir)
        total += entry.size
        _check_size(entry.name, entry.size, total, limits)
        members.append(_Member(entry.name, _parts(entry.name), entry.is_dir, entry.size,
                               None if entry.is_dir else lambda entry=entry: tar_reader.read_member(stream, entry)))
    return members


def _extract(members: list[_Member], destination: Path, limits: ArchiveLimits) -> list[str]:
    files = _flatten(members)
    destination.mkdir()
    total = 0
    for name, member in files.items():
        total = _write(member, destination / name, total, limits)
    return sorted(files)


def _flatten(members: list[_Member]) -> dict[str, _Member]:
    """File name (top-level folder stripped) -> member; refuses nesting, mixed layouts and duplicates."""
    files = [m for m in members if not m.is_dir]
    folders = {m.parts[0] for m in members if m.is_dir or len(m.parts) > 1}
    for member in members:
        if len(member.parts) > (1 if member.is_dir else 2):
            raise InvalidAdapterError(member.name, "nested directories are not accepted: at most one top-level "
                                                   "folder holding the adapter's files")
    loose = [m.name for m in files if len(m.parts) == 1]
    if len(folders) > 1 or (folders and loose):
        name = sorted(folders)[1] if len(folders) > 1 else loose[0]
        raise InvalidAdapterError(name, "the archive mixes folders or top-level files: put all the adapter's "
                                        "files in one folder or all at the top level")
    flat: dict[str, _Member] = {}
    for member in files:
        if member.parts[-1] in flat:
            raise InvalidAdapterError(member.name, "the name appears twice in the archive")
        flat[member.parts[-1]] = member
    return flat


def _write(member: _Member, target: Path, total: int, limits: ArchiveLimits) -> int:
    written = 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as out, member.open() as source:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            _check_size(member.name, written, total + written, limits)
            out.write(chunk)
    return total + written


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member name; refuses anything that could land outside the destination."""
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidAdapterError(_shown(name), f"member names are at most {MAX_NAME_BYTES} bytes long")
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise InvalidAdapterError(name or "<empty>", "member names must be relative paths with '/' separators")
    parts = tuple(name[:-1].split("/") if name.endswith("/") else name.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidAdapterError(name, "member names may not hold '..', '.' or empty components")
    return parts


def _shown(name: str) -> str:
    """A member name as an error may quote it: a hostile name can be long."""
    return name if len(name) <= 120 else name[:120] + "..."


def _check_kind(name: str, is_plain: bool) -> None:
    if not is_plain:
        raise InvalidAdapterError(_shown(name), "only regular files and directories are accepted, not links, devices "
                                        "or FIFOs")


def _check_count(count: int, name: str, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise InvalidAdapterError(_shown(name) or "archive",
                                  f"too many members: at most {limits.max_members} are accepted")


def _check_size(name: str, size: int, total: int, limits: ArchiveLimits) -> None:
    if size > limits.member_limit:
        raise InvalidAdapterError(_shown(name), f"member is larger than {limits.member_limit} bytes", TOO_LARGE)
    if total > limits.max_total_bytes:
        raise InvalidAdapterError(_shown(name), f"the unpacked adapter is larger than {limits.max_total_bytes} bytes",
                                  TOO_LARGE)


def _open_no_follow(path: str) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
