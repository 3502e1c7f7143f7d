"""Tier commands from the sidecar to the engine worker's RAM tier, through the control file."""

from __future__ import annotations

import pytest

from kvcache.worker_control import MAX_COMMANDS, ControlReader, ControlWriter, control_path, read_commands


def test_a_worker_applies_each_command_once_and_never_replays_old_ones(tmp_path):
    path = control_path(tmp_path)
    writer = ControlWriter(path)
    assert writer.send("release", b"\x01" * 16) == 1
    reader = ControlReader(path)  # a worker starting now: what is already in the file is history
    assert reader.pending() == []
    second = writer.send("prefetch", b"\x02" * 16)
    [command] = reader.pending()
    assert (command.id, command.action, command.namespace) == (second, "prefetch", "02" * 16)
    reader.applied = command.id
    assert reader.pending() == []
    assert ControlWriter(path).send("release", b"\x03" * 16) == 3  # a restarted sidecar continues the ids
    assert [c.id for c in reader.pending()] == [3]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_the_file_keeps_the_newest_commands_and_refuses_unknown_actions(tmp_path):
    path = control_path(tmp_path)
    writer = ControlWriter(path)
    for _ in range(MAX_COMMANDS + 5):
        writer.send("release", b"\x01" * 16)
    ids = [c.id for c in read_commands(path)]
    assert len(ids) == MAX_COMMANDS and ids[-1] == MAX_COMMANDS + 5
    with pytest.raises(ValueError, match="action"):
        writer.send("delete", b"\x01" * 16)
    path.write_text('{"commands": [')
    assert read_commands(path) == [] and ControlReader(path).applied == 0  # torn or foreign: no commands


class RecordingStore:
    """A RAM placement that records its moves; moving `broken` fails."""

    def __init__(self, broken: bytes) -> None:
        self.broken, self.moves = broken, []

    def prefetch(self, namespace_id: bytes) -> int:
        return self._move("prefetch", namespace_id)

    def release_ram(self, namespace_id: bytes) -> int:
        return self._move("release", namespace_id)

    def _move(self, action: str, namespace_id: bytes) -> int:
        if namespace_id == self.broken:
            raise OSError("disk gone")
        self.moves.append((action, namespace_id))
        return 1


def test_pending_commands_are_applied_in_order_and_a_failed_one_is_logged_and_passed(tmp_path, caplog):
    path = control_path(tmp_path)
    reader = ControlReader(path)
    writer = ControlWriter(path)
    for action, namespace in (("release", b"\x01"), ("prefetch", b"\x02"), ("release", b"\x03")):
        writer.send(action, namespace * 16)
    store = RecordingStore(broken=b"\x02" * 16)
    with caplog.at_level("INFO", logger="memsidecar.kvcache"):
        applied = reader.apply_pending(store)
    assert [(c.id, c.action) for c in applied] == [(1, "release"), (2, "prefetch"), (3, "release")]
    assert store.moves == [("release", b"\x01" * 16), ("release", b"\x03" * 16)]
    assert reader.applied == 3 and reader.apply_pending(store) == []
    assert "tier command 2 (prefetch) failed" in caplog.text and "OSError: disk gone" in caplog.text
