"""Shared fixtures: one generated tiny model per session and real `memsidecar serve` processes on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.served import ServedSidecar
from sidecar.engine.model_builder import build_model
from sidecar.engine.process import free_port
from textual.embedder import Embedder


class Sidecar(ServedSidecar):
    """A `memsidecar serve` subprocess on `data_dir`, in its own session so all its descendants can be found and
    checked, and killed by `stop` if any outlive it. `env` is on top of this process's (secrets that are not flags);
    `engine_port` is fixed, so tests can reach the engine's own /metrics."""

    def __init__(self, data_dir: Path, args: list[str], engine_port: int | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir, self.args, self.engine_port = data_dir, args, engine_port
        port = free_port() if port is None else port
        engine = ["--engine-port", str(engine_port)] if engine_port is not None else []
        super().__init__(["--data-dir", str(data_dir), *args, *engine], data_dir.parent / f"sidecar-{port}.log",
                         port=port, env=env, new_session=True)

    def running(self) -> "Sidecar":
        """Started and ready inside the `with` block; stopped, with every engine process, after it."""
        return self

    def descendants(self) -> set[int]:
        """The sidecar's pid and those of every live process below it."""
        processes = _processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _sid, _state) in processes.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = set(), [self.process.pid]
        while todo:
            pid = todo.pop()
            if pid in processes:
                tree.add(pid)
                todo += children.get(pid, [])
        return tree

    def process_sessions(self) -> set[int]:
        """Session ids of the sidecar and its descendants (a descendant may have started one of its own)."""
        return {os.getsid(pid) for pid in self.descendants()}

    def live_pids(self, sessions: set[int]) -> list[int]:
        """Live (not zombie) processes in `sessions`: orphans that lost their parent are still found by session."""
        return [pid for pid, (_ppid, sid, state) in _processes().items() if sid in sessions and state != "Z"]

    def stop(self) -> None:
        if not self.process:
            return
        sessions = self.process_sessions()
        super().stop()
        for pid in self.live_pids(sessions):
            os.kill(pid, signal.SIGKILL)


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) for every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real MiniLM sentence embedder, loaded once per session."""
    return Embedder.open()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def engine_port() -> int:
    return free_port()


API_KEYS = {"tenant-a": "key-a", "tenant-b": "key-b", "tenant-c": "key-c"}  # tenant-c: the console test's own


def auth(tenant: str = "tenant-a") -> dict[str, str]:
    """Headers authenticating as `tenant` on the shared sidecar."""
    return {"Authorization": f"Bearer {API_KEYS[tenant]}"}


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory, tiny_model, engine_port) -> Sidecar:
    """One sidecar with a managed engine on the tiny model and two tenants' API keys, shared by integration tests.

    The engine's own prefix cache is off, so every reuse of KV blocks is served by activation memory; it serves
    LoRA adapters through 2 slots with 4 loaded at most. The engine fair share is off: tests take turns on this
    sidecar as different tenants, and one test's concurrency must not depend on which tenant chatted before it (the
    fair share has tests of its own, on sidecars of their own).
    """
    keys = ",".join(f"{key}:{tenant}" for tenant, key in API_KEYS.items())
    server = Sidecar(tmp_path_factory.mktemp("sidecar") / "data",
                     ["--model", str(tiny_model), "--max-request-bytes", "65536", "--api-keys", keys,
                      "--max-loras", "2", "--max-cpu-loras", "4", "--max-adapter-upload-bytes", "1048576",
                      "--engine-fair-slots", "0", "--engine-args=--no-enable-prefix-caching"],
                     engine_port=engine_port)
    with server.running():
        yield server


@dataclass
class RedisServer:
    """A real redis-server on a loopback port, data in a temp dir, stopped (or killed) by the test."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    args: tuple[str, ...] = ()  # more configuration, after (so overriding) the defaults: e.g. --requirepass

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            pytest.skip("redis-server (or valkey-server) is not installed; .ci/run installs it")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @contextlib.contextmanager
    def running(self):
        try:
            yield self.start()
        finally:
            self.kill()


@pytest.fixture
def redis_server(tmp_path) -> RedisServer:
    with RedisServer(tmp_path).running() as server:
        yield server


POSTGRES_BIN = Path("/usr/lib/postgresql")


def postgres_binary(name: str) -> str:
    """`name` (initdb, postgres) from Debian's postgresql package, newest major version first; skips if absent."""
    found = sorted(POSTGRES_BIN.glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]), reverse=True)
    if found:
        return str(found[0])
    if shutil.which(name):
        return shutil.which(name)
    pytest.skip("PostgreSQL is not installed (Debian's postgresql package); .ci/run installs it")


@dataclass
class PostgresServer:
    """A real throwaway PostgreSQL cluster on a loopback port, run as the `postgres` user (initdb refuses root),
    trust authentication, data in `directory` (a new directory under the system temp dir by default: pytest's own
    is private to root). `stop` and `kill` end it; `start` again serves the same data; `remove` deletes it."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="memsidecar-pg-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *command: str, **popen) -> subprocess.Popen:
        """`command` as the `postgres` user when this is root (the process itself, so signals reach it)."""
        user = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
        return subprocess.Popen(list(command), **user, **popen)

    def start(self) -> "PostgresServer":
        data = self.directory / "data"
        if not data.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres")
            done = self._as_postgres(postgres_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                     "--no-sync", "-E", "UTF8", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if done.wait(timeout=60) != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.read().decode()}")
        self.process = self._as_postgres(
            postgres_binary("postgres"), "-D", str(data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.directory}", "-c", "fsync=on", "-c", "max_connections=200",
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "postgres.log", "ab"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.directory / 'postgres.log').read_text()[-2000:]}")
            try:
                import psycopg

                with psycopg.connect(self.url, connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("postgres did not start")

    def create_database(self, name: str) -> str:
        """A new empty database `name` on this server; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open transactions roll back, committed ones are on disk."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """An immediate shutdown (SIGQUIT), as a crash: the next start recovers from the write-ahead log."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(timeout=30)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    @contextlib.contextmanager
    def running(self):
        try:
            yield self.start()
        finally:
            self.stop()
            self.remove()


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """One PostgreSQL server for the session; tests take a fresh database each (`postgres_url`)."""
    with PostgresServer().running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """The URL of a new empty database on the session's server, named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40] + f"_{free_port()}"
    return postgres_server.create_database(name)


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    """The default real instruct model (smollm2-135m-instruct), built from its pinned wheel once per session."""
    return build_model("smollm2-135m-instruct", tmp_path_factory.mktemp("models") / "smollm2-135m-instruct")
