"""A served sidecar for the benchmarks and the integration tests: `memsidecar serve` as a subprocess.

`ServedSidecar(args, log_path)` runs `memsidecar serve --port PORT *args` (the console script beside this Python)
with stdout and stderr appended to `log_path`. Used as a context manager, plain or async, it starts the process,
waits until `/readyz` answers 200, and on exit stops it: SIGTERM, then SIGKILL after `stop_timeout_s` (to its whole
process group when it runs in a session of its own). A sidecar that exits or is not ready in time raises an error
quoting the end of its log, since the log usually goes away with a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from sidecar.engine.process import free_port

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
POLL_S = 0.5


def log_tail(log_path: Path, lines: int = 60) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    """Poll `url` until it answers 200. RuntimeError if `process` exits first, TimeoutError after `timeout_s`; both
    quote the end of `log_path` and name the process by the log's stem."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log_path.stem} exited with {process.returncode}; the end of {log_path}:\n"
                               f"{log_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(POLL_S)
    raise TimeoutError(f"{log_path.stem} was not ready in {timeout_s:.0f} s; the end of {log_path}:\n"
                       f"{log_tail(log_path)}")


class ServedSidecar:
    """A `memsidecar serve` subprocess on a loopback port, logging to `log_path`.

    `args` are the flags after `--port` (a later flag overrides an earlier one); `env` is added to this process's
    environment; `new_session` runs it in a session of its own, so a stop that has to kill reaches every process
    it started. `start()` / `wait_ready()` / `stop()` are the steps the context manager takes, for callers that
    need to act between them.
    """

    def __init__(self, args: Sequence[str], log_path: Path, *, port: int | None = None,
                 env: Mapping[str, str] | None = None, new_session: bool = False, ready_timeout_s: float = 600,
                 stop_timeout_s: float = 60) -> None:
        self.port = port if port is not None else free_port(HOST)
        self.argv = [str(BIN / "memsidecar"), "serve", "--port", str(self.port), *args]
        self.log_path = log_path
        self.env = dict(env or {})
        self.new_session = new_session
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "ServedSidecar":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=self.new_session, env={**os.environ, **self.env})
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Until `/readyz` answers 200 (at most `timeout_s`, by default `ready_timeout_s`)."""
        wait_until_ready(self.process, f"{self.base_url}/readyz", self.log_path,
                         self.ready_timeout_s if timeout_s is None else timeout_s)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `stop_timeout_s`; nothing if it is not running."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            if self.new_session:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> "ServedSidecar":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> "ServedSidecar":
        return await asyncio.to_thread(self.__enter__)  # polls in a thread: the event loop stays free

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)
