"""The inference engine behind the sidecar: vLLM's OpenAI server, as a supervised child process or an attached URL.

Invariants of `ManagedEngine`:
- the engine runs in its own process group (it spawns worker processes), and every stop or restart kills the whole
  group, so no engine process outlives the sidecar; `PR_SET_PDEATHSIG` also stops the engine's front end if the
  sidecar is killed with SIGKILL;
- the engine stays in the sidecar's session: with Linux's autogroups (`/proc/sys/kernel/sched_autogroup_enabled`)
  a session of its own would make it a scheduling group of its own, and the kernel would split the CPU between the
  engine and the whole sidecar before thread priorities count, so niced bulk work could not yield to the engine and
  the engine could not yield to searches (measured: the sidecar's threads waited 7x longer for a core than they
  ran, and the machine stalled for up to 4.5 s at a time; `docs/measurement-history.md`);
- `is_ready` is true only while the current child is alive and its `/health` answered 200 since it started, and it
  turns false only when `HEALTH_MISSES` probes in a row went unanswered (`Readiness`): one probe that timed out while
  the engine or this process was busy must not refuse every tenant's chats for a poll period;
- a dead child is restarted after a back-off delay (`RestartBackoff`), for as long as the sidecar runs;
- a started engine runs one forward pass of several tokens (`_warm_up`) before it reads ready: with LoRA on, vLLM's
  CPU worker died (no traceback) when the first forward pass of its life computed a single token, on a 2-core Intel
  Xeon with AMX (not on an AMD EPYC). A one-token prompt does that, and so does any prompt whose KV blocks but the
  last token load from the KV store, which is what every request repeating a stored prefix is after a restart: so
  one tenant's request could take the engine down for every tenant, again after each restart. The warm-up prompt
  opens with a random nonce, so none of it is ever found in the KV store.

The engine's command line and environment come from `command` (`EngineSpec`, `engine_command`, `engine_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from sidecar.engine.command import EngineSpec, engine_command, engine_env

log = logging.getLogger("memsidecar.engine")

HEALTH_POLL_S = 0.5
WARM_UP_PROMPT = "warms the engine up with a first forward pass of many tokens."
WARM_UP_TIMEOUT_S = 300.0
HEALTH_MISSES = 3  # probes in a row without a 200 before a started engine reads not ready
STOP_GRACE_S = 10.0
PROGRESS_EVERY_S = 5.0
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class RestartBackoff:
    """Delay before restarting a dead engine: doubles per quick failure, resets once a run stayed up `reset_after_s`."""

    initial_s: float = 1.0
    maximum_s: float = 30.0
    reset_after_s: float = 120.0
    _next_s: float = field(default=0.0, init=False)

    def delay_after(self, uptime_s: float) -> float:
        """The delay before the next start, given how long the run that just ended lasted."""
        if uptime_s >= self.reset_after_s or self._next_s == 0.0:
            self._next_s = self.initial_s
        else:
            self._next_s = min(self._next_s * 2, self.maximum_s)
        return self._next_s


class Engine(Protocol):
    """What the HTTP layer needs from an engine, managed or attached."""

    base_url: str

    @property
    def is_ready(self) -> bool: ...

    @property
    def restart_count(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Readiness:
    """An engine's readiness from its health probes: ready after one answered probe; not ready again only after
    `misses` probes in a row were not (a timeout, an error, a non-200), or at once with `lost` (the process died).
    Under a flood, a probe can time out while the engine still serves: one such probe used to turn every tenant's
    requests into 503s for the next two seconds."""

    def __init__(self, misses: int = HEALTH_MISSES) -> None:
        self.misses = misses
        self.ready = False
        self._missed = 0

    def observe(self, answered: bool) -> bool:
        """Record one probe's outcome; returns whether the engine now reads ready."""
        if answered:
            self._missed = 0
            self.ready = True
        else:
            self._missed += 1
            if self._missed >= self.misses:
                self.ready = False
        return self.ready

    def lost(self) -> None:
        self.ready = False
        self._missed = 0


async def probe_health(readiness: Readiness, client: httpx.AsyncClient, base_url: str) -> bool:
    """Probe the engine's health once into `readiness`, logging a change either way; returns whether it reads ready."""
    was = readiness.ready
    ready = readiness.observe(await check_health(client, base_url))
    if ready and not was:
        log.info("engine at %s is ready", base_url)
    elif was and not ready:
        log.warning("engine at %s is not ready: %d health probes in a row unanswered", base_url, readiness.misses)
    return ready


async def check_health(client: httpx.AsyncClient, base_url: str) -> bool:
    try:
        response = await client.get(f"{base_url}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class AttachedEngine:
    """An engine someone else runs: the sidecar only watches its health."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._readiness = Readiness()
        self._task: asyncio.Task | None = None

    @property
    def is_ready(self) -> bool:
        return self._readiness.ready

    @property
    def restart_count(self) -> int:
        return 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        async with httpx.AsyncClient() as client:
            while True:
                ready = await probe_health(self._readiness, client, self.base_url)
                await asyncio.sleep(HEALTH_POLL_S if not ready else 2.0)


def _engine_preexec() -> None:
    """Runs in the child before exec: a process group of its own in the sidecar's session (not `setsid`: see the
    module's invariants), and SIGTERM delivered to it when the sidecar dies (Linux only)."""
    os.setpgid(0, 0)  # Popen's process_group, which uvloop's subprocess_exec does not take
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _log_supervisor_end(task: asyncio.Task) -> None:
    """A supervising task only ends by `stop`; one ended by an error is a defect, logged (else nobody sees it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("engine supervision ended by an error; the engine will not be restarted",
                  exc_info=task.exception())


class ManagedEngine:
    """Runs the engine as a child process group, waits for health, restarts it with back-off when it dies."""

    def __init__(self, spec: EngineSpec, log_path: Path, startup_timeout_s: float = 900.0,
                 backoff: RestartBackoff | None = None) -> None:
        self.spec = spec
        self.base_url = spec.base_url
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.backoff = backoff or RestartBackoff()
        self._process: asyncio.subprocess.Process | None = None
        self._readiness = Readiness()
        self._restarts = 0
        self._stopping = False
        self._task: asyncio.Task | None = None

    @property
    def is_ready(self) -> bool:
        return self._readiness.ready and self._process is not None and self._process.returncode is None

    @property
    def restart_count(self) -> int:
        return self._restarts

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._supervise())
        self._task.add_done_callback(_log_supervisor_end)

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # an error that ended it is logged already
        await self._kill_group()

    async def _supervise(self) -> None:
        async with httpx.AsyncClient() as client:
            while not self._stopping:
                started = time.monotonic()
                ended = await self._run_once(client, started)
                if self._stopping:
                    return
                delay = self.backoff.delay_after(time.monotonic() - started)
                self._restarts += 1
                log.warning("%s; restart %d in %.0f s, log: %s", ended, self._restarts, delay, self.log_path)
                await asyncio.sleep(delay)

    async def _run_once(self, client: httpx.AsyncClient, started: float) -> str:
        """Start the engine and watch it until it stops; what ended the run, for the log. A start that fails (the
        interpreter, the log file or the process table) is such an end too, retried with back-off like a crash:
        raised, it would end the supervising task unseen and leave the sidecar not ready with nothing logged."""
        try:
            await self._spawn()
        except (OSError, subprocess.SubprocessError) as error:
            return f"engine could not be started ({type(error).__name__}: {error})"
        if await self._wait_healthy(client, started):
            await self._watch(client)
        self._readiness.lost()
        await self._kill_group()
        return f"engine stopped (exit {self._process.returncode})"

    async def _spawn(self) -> None:
        argv = engine_command(self.spec)
        log.info("starting engine: %s", shlex.join(argv))
        with open(self.log_path, "ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                env=engine_env(self.spec, dict(os.environ)), preexec_fn=_engine_preexec,
            )

    async def _wait_healthy(self, client: httpx.AsyncClient, started: float) -> bool:
        """Poll until healthy (True), or until the child exits or the start-up timeout passes (False)."""
        last_report = started
        while self._process.returncode is None:
            if await check_health(client, self.base_url):
                await self._warm_up(client)
                if self._process.returncode is not None:
                    return False
                self._readiness.observe(True)
                log.info("engine ready after %.1f s at %s", time.monotonic() - started, self.base_url)
                return True
            now = time.monotonic()
            if now - started > self.startup_timeout_s:
                log.error("engine not healthy after %.0f s; restarting it", self.startup_timeout_s)
                return False
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                log.info("engine starting (%.0f s): %s", now - started, last_log_line(self.log_path))
            await asyncio.sleep(HEALTH_POLL_S)
        return False

    async def _warm_up(self, client: httpx.AsyncClient) -> None:
        """One completion of a nonce then `WARM_UP_PROMPT` (see the module's invariants): the nonce opens the first
        KV block, so no block of it is stored already. A failure is logged, not fatal: the engine's health decides
        readiness as before."""
        prompt = f"{secrets.token_hex(16)} {WARM_UP_PROMPT}"
        body = {"model": self.spec.served_model_name, "prompt": prompt, "max_tokens": 1, "temperature": 0}
        try:
            response = await client.post(f"{self.base_url}/v1/completions", json=body, timeout=WARM_UP_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as error:
            log.warning("engine warm-up request failed (%s: %s)", type(error).__name__, error)

    async def _watch(self, client: httpx.AsyncClient) -> None:
        """Track readiness until the child exits."""
        while self._process.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.wait(), timeout=2.0)
            if self._process.returncode is None:
                await probe_health(self._readiness, client, self.base_url)

    async def _kill_group(self) -> None:
        """Stop every process of the engine's group: SIGTERM, then SIGKILL after a grace period."""
        process = self._process
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
            if not _group_alive(process.pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            deadline = time.monotonic() + wait_s
            while _group_alive(process.pid) and time.monotonic() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=0.2)
        if process.returncode is None:
            await process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_log_line(path: Path, max_bytes: int = 4096) -> str:
    """The last non-empty line of the engine log, for start-up progress messages."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - max_bytes))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip()[:160] for line in reversed(lines) if line.strip()), "")
