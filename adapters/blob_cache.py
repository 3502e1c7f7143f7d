"""A node's disk cache of adapter blobs kept in a shared store: `<directory>/<sha256>/` holds the blob's files.

Rules:
- A blob enters the cache whole or not at all: it is fetched into `.fetch-*/blob`, its `adapter_digest` checked
  against the sha256 it is filed under, fsynced, then renamed into place. A blob that fails the check is refused
  with `CorruptAdapterError` and leaves nothing behind; `open` removes the leftovers of a crash mid-fetch.
- Content addressing makes a cached blob valid for as long as it exists: nothing is ever rewritten in place. Two
  threads fetching one blob both fetch it; the first rename wins and the other copy is discarded.
- The cache holds copies only: `keep_only` and `discard` drop blobs the shared store no longer has.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from adapters.errors import CorruptAdapterError
from memcore.digest import adapter_digest

log = logging.getLogger(__name__)
FETCHING = ".fetch-"


class BlobCache:
    """Blobs of a shared store, copied to this node's `directory` on first use and checked against their digest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def open(cls, directory: Path) -> BlobCache:
        """The cache in `directory` (created), without the leftovers of interrupted fetches."""
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(FETCHING + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return cls(directory)

    def path(self, sha256: str, fetch: Callable[[Path], None]) -> Path:
        """The local directory of blob `sha256`; on a miss `fetch(directory)` writes its files into an empty one."""
        target = self.directory / sha256
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(prefix=FETCHING, dir=self.directory))
        try:
            blob = staging / "blob"
            blob.mkdir()
            fetch(blob)
            _check_digest(blob, sha256)
            for path in [*blob.iterdir(), blob]:
                fsync_path(path)
            try:
                os.rename(blob, target)
            except OSError:
                if not target.is_dir():  # not a lost race with another fetch of the same blob
                    raise
            fsync_path(self.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("adapter blob %s fetched into %s", sha256, target)
        return target

    def cached(self) -> set[str]:
        """The sha256s of the blobs held."""
        return {entry.name for entry in self.directory.iterdir() if not entry.name.startswith(".")}

    def keep_only(self, sha256s: set[str]) -> None:
        """Drop every cached blob not in `sha256s`."""
        for sha256 in self.cached() - sha256s:
            self.discard(sha256)

    def discard(self, sha256: str) -> None:
        """Drop one cached blob (absent is fine); renamed out of sight first, as a crash may stop the removal."""
        trash = Path(tempfile.mkdtemp(prefix=FETCHING, dir=self.directory))
        try:
            os.rename(self.directory / sha256, trash / sha256)
        except FileNotFoundError:
            pass
        shutil.rmtree(trash, ignore_errors=True)


def _check_digest(blob: Path, sha256: str) -> None:
    try:
        found = adapter_digest(blob)
    except (OSError, ValueError) as exc:  # a missing file, a config that is no longer JSON
        raise CorruptAdapterError(sha256, f"the fetched files cannot be read as an adapter: {exc}") from None
    if found != sha256:
        raise CorruptAdapterError(sha256, f"the fetched files have digest {found}; refused")


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's entry to disk (a rename is durable only once its directory is)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
