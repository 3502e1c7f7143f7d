"""An acknowledged write survives kill -9: a writer prints each id after `add` returns; we SIGKILL it mid-burst."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from textual.store import MemoryStore

WRITER = textwrap.dedent("""
    import sys
    from textual.store import MemoryStore

    store = MemoryStore.open(sys.argv[1])
    handle = store.for_tenant("t1")
    i = 0
    while True:
        memory = handle.add(f"memory number {i}", user="u1")
        print(memory.id, flush=True)
        i += 1
""")


def test_acknowledged_writes_survive_sigkill(tmp_path, embedder):
    path = tmp_path / "store"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    acknowledged = []
    deadline = time.monotonic() + 300
    while len(acknowledged) < 50 and time.monotonic() < deadline:
        acknowledged.append(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    rest, _ = writer.communicate()
    acknowledged += [line for line in rest.splitlines() if line.strip()]
    assert writer.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 50
    with MemoryStore.open(path, embedder=embedder) as store:
        handle = store.for_tenant("t1")
        for memory_id in acknowledged:
            assert handle.get(memory_id).content.startswith("memory number")
        assert handle.stats().count >= len(acknowledged)
