"""Commands from the sidecar to the engine worker's RAM tier, through a small JSON file the worker polls.

The worker's RAM tier lives in the vLLM worker process, which the sidecar cannot call. The sidecar's tier scheduler
therefore appends commands (`prefetch` a namespace from disk into RAM, `release` a namespace from RAM) to
`worker-control.json` in the store directory, written whole and renamed into place so a reader never sees half a
file; the worker reads it on its writer thread, applies each command newer than the last it applied
(`ControlReader.apply_pending`), and reports that id as `applied_command` in its published stats (`worker_stats`).
Ids only grow, also across restarts of either side: a new writer continues after the file's last id, and a new
worker starts after it (old commands are not replayed into a fresh RAM tier). Only the last `MAX_COMMANDS` are
kept: a worker that falls further behind skips the rest, which costs placement, never correctness.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger("memsidecar.kvcache")
FILE_NAME = "worker-control.json"
MAX_COMMANDS = 256
Action = Literal["prefetch", "release"]
ACTIONS = ("prefetch", "release")


@dataclass(frozen=True)
class Command:
    id: int
    action: Action
    namespace: str  # the namespace id, hex


def control_path(store_dir: str | Path) -> Path:
    return Path(store_dir) / FILE_NAME


def read_commands(path: Path) -> list[Command]:
    """Every command in the file, oldest first; none when there is no file or it cannot be read."""
    try:
        body = json.loads(path.read_text())
        return [Command(int(c["id"]), c["action"], str(c["namespace"])) for c in body["commands"]
                if c.get("action") in ACTIONS]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def last_id(path: Path) -> int:
    return max((command.id for command in read_commands(path)), default=0)


class ControlWriter:
    """The sidecar's side: appends commands; thread-safe within one process (one writer process per store)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, action: Action, namespace: bytes) -> int:
        """Append a command and return its id."""
        if action not in ACTIONS:
            raise ValueError(f"action: one of {', '.join(ACTIONS)}, not {action!r}")
        with self._lock:
            commands = read_commands(self.path)
            command = Command(max((c.id for c in commands), default=0) + 1, action, namespace.hex())
            commands = [*commands, command][-MAX_COMMANDS:]
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"commands": [asdict(c) for c in commands]}))
            os.replace(temporary, self.path)
        return command.id


class RamPlacement(Protocol):
    """What a command moves: a store with a RAM tier (`kvcache.store.TieredStore`)."""

    def prefetch(self, namespace_id: bytes) -> int: ...

    def release_ram(self, namespace_id: bytes) -> int: ...


class ControlReader:
    """The worker's side: the commands it has not applied yet, starting after those in the file when it starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.applied = last_id(path)
        self._seen = _version(path)

    def pending(self) -> list[Command]:
        """Commands newer than `applied`; the file is read only when it changed since the last look (it is polled
        from the worker's writer thread)."""
        version = _version(self.path)
        if version == self._seen:
            return []
        commands = [command for command in read_commands(self.path) if command.id > self.applied]
        self._seen = version
        return commands

    def apply_pending(self, store: RamPlacement) -> list[Command]:
        """Carry out the pending commands on `store`, oldest first, and return them. A failed command is logged and
        still counts as applied: it costs placement only, and the scheduler's next pass sees the tiers as they are."""
        commands = self.pending()
        for command in commands:
            try:
                move = store.prefetch if command.action == "prefetch" else store.release_ram
                moved = move(bytes.fromhex(command.namespace))
                log.info("tier command %d: %s of namespace %s moved %d blocks", command.id, command.action,
                         command.namespace, moved)
            except Exception:
                log.exception("tier command %d (%s) failed", command.id, command.action)
            self.applied = command.id
        return commands


def _version(path: Path) -> tuple[int, int] | None:
    """The file's (inode, mtime in ns): a rename of a new file into place always changes the inode."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns
