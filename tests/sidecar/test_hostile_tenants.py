"""Hostile tenants (issue 18), each attack against a real `memsidecar serve`: it ends in a 4xx within seconds, the
sidecar's resident memory grows by a bounded amount, and another tenant is served meanwhile."""

from __future__ import annotations

import io
import json
import select
import socket
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from adapters.synthetic import random_adapter
from tests.adapters.conftest import extended_header_bomb
from tests.conftest import API_KEYS, Sidecar, auth

pytestmark = pytest.mark.slow

ATTACK_DEADLINE_S = 5.0
MAX_RSS_GROWTH = 64 << 20
MAX_PROBE_LATENCY_S = 3.0  # measured: under 0.1 s; the machine running the tests may be shared
PROBE_INTERVAL_S = 0.1


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Watch:
    """While an attack runs: the sidecar process's resident memory, sampled, and another tenant's cheap API calls
    (list its memories), timed, until one started after the attack was answered has come back. `check` asserts
    both stayed within bounds."""

    def __init__(self, server: Sidecar, tenant: str = "tenant-b") -> None:
        self.server = server
        self.headers = auth(tenant)
        self.baseline = rss_bytes(server.process.pid)
        self.peak = self.baseline
        self.latencies: list[float] = []
        self._probe_starts: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample), threading.Thread(target=self._probe)]

    def __enter__(self) -> "Watch":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        attack_over = time.monotonic()
        while not any(started >= attack_over for started in self._probe_starts[:len(self.latencies)]):
            if time.monotonic() - attack_over > 30:
                break  # no probe came back: check() says so
            time.sleep(0.01)
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def rss_growth(self) -> int:
        return self.peak - self.baseline

    def check(self) -> None:
        print(f"\n[watch] RSS growth {self.rss_growth / 2**20:.1f} MiB, {len(self.latencies)} probes, worst "
              f"latency {max(self.latencies, default=float('nan')):.3f} s")
        assert self.rss_growth < MAX_RSS_GROWTH, f"RSS grew by {self.rss_growth >> 20} MiB"
        assert self.latencies and max(self.latencies) < MAX_PROBE_LATENCY_S, f"probe latencies {self.latencies}"

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.server.process.pid))

    def _probe(self) -> None:
        with httpx.Client(base_url=self.server.base_url, headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self._probe_starts.append(started)
                try:
                    ok = client.get("/v1/memories", params={"user_id": "probe", "limit": 1}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.monotonic() - started if ok else float("inf"))
                self._stop.wait(PROBE_INTERVAL_S)


def timed(call) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def upload(server: Sidecar, data: bytes, name: str = "hostile", tenant: str = "tenant-a") -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/adapters", params={"name": name}, content=data, timeout=120,
                      headers={"content-type": "application/octet-stream", **auth(tenant)})


def refused_at_once(server: Sidecar, attack) -> tuple[httpx.Response, Watch]:
    """Run `attack` (a callable returning a response) under a Watch; the response must come within the deadline."""
    with Watch(server) as watch:
        response, elapsed = timed(attack)
    print(f"\n[attack] {response.status_code} after {elapsed:.3f} s")
    assert elapsed < ATTACK_DEADLINE_S, f"answered after {elapsed:.1f} s"
    watch.check()
    return response, watch


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory) -> Path:
    return random_adapter(tiny_model, tmp_path_factory.mktemp("hostile") / "adapter", seed=18)


def zipped(directory: Path, config_changes: dict | None = None, weights: bytes | None = None) -> bytes:
    """The adapter as a zip, its config and weights optionally replaced."""
    config = {**json.loads((directory / "adapter_config.json").read_text()), **(config_changes or {})}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("adapter_config.json", json.dumps(config))
        archive.writestr("adapter_model.safetensors", weights or (directory / "adapter_model.safetensors").read_bytes())
    return buffer.getvalue()


# 1. an extended tar header declaring 512 MiB


@pytest.mark.parametrize("kind", [b"L", b"x"])
def test_a_tgz_whose_long_name_header_declares_512_mib_is_a_413_at_once(sidecar, kind):
    bomb = extended_header_bomb(512 << 20, 512 << 20, kind)  # the whole 512 MiB is there to inflate
    assert len(bomb) < 600 << 10
    response, _ = refused_at_once(sidecar, lambda: upload(sidecar, bomb))
    assert response.status_code == 413 and response.json()["error"]["param"] == "archive"
    assert "at most 65536" in response.json()["error"]["message"]


# 2. a backtracking target_modules regex


@pytest.mark.parametrize("pattern", ["(.*.*)*Z", "(.*a){20}", "(x+x+)+y"])
def test_a_backtracking_target_modules_regex_is_a_422_at_once(sidecar, adapter_dir, pattern):
    response, _ = refused_at_once(sidecar, lambda: upload(sidecar, zipped(adapter_dir, {"target_modules": pattern})))
    assert response.status_code == 422 and response.json()["error"]["param"] == "target_modules"


# 3. large bodies without a key


def request_head(path: str, length: int, key: str | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             "Content-Type: application/octet-stream"] + ([f"Authorization: Bearer {key}"] if key else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket, timeout_s: float) -> int | None:
    """The status of the response on `sock`, or None if none comes within `timeout_s` (or the peer reset)."""
    sock.settimeout(timeout_s)
    try:
        head = sock.recv(4096)
    except (socket.timeout, OSError):
        return None
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None


@pytest.mark.parametrize("key, length, status", [(None, 900_000, 401), ("wrong-key", 900_000, 401),
                                                 (API_KEYS["tenant-a"], 2 << 20, 413)])
def test_a_refusal_is_answered_from_the_headers_before_any_body_byte(sidecar, key, length, status):
    """Headers only, no body sent: the answer cannot have waited for the body."""
    with Watch(sidecar) as watch, socket.create_connection(("127.0.0.1", sidecar.port)) as sock:
        sock.sendall(request_head("/v1/adapters?name=x", length, key))
        started = time.monotonic()
        assert status_of(sock, ATTACK_DEADLINE_S) == status
        print(f"\n[attack] {status} after {time.monotonic() - started:.3f} s, no body sent")
        assert time.monotonic() - started < 1.0
    watch.check()


@pytest.fixture(scope="module")
def roomy(sidecar, engine_port, tiny_model, tmp_path_factory) -> Sidecar:
    """A second sidecar on the session's engine with the default body limits (256 MiB adapter uploads)."""
    keys = ",".join(f"{key}:{tenant}" for tenant, key in API_KEYS.items())
    server = Sidecar(tmp_path_factory.mktemp("roomy") / "data",
                     ["--engine-url", f"http://127.0.0.1:{engine_port}", "--model", str(tiny_model),
                      "--api-keys", keys])
    with server.running():
        yield server


def push_unauthenticated_upload(server: Sidecar, total: int, results: list) -> None:
    """Send a `total`-byte upload without a key, 1 MiB at a time, until the server answers or drops us."""
    chunk, sent, status = bytes(1 << 20), 0, None
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request_head("/v1/adapters?name=flood", total, None))
        while sent < total and status is None:
            if select.select([sock], [], [], 0)[0]:
                status = status_of(sock, 1)
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        results.append((status if status is not None else status_of(sock, ATTACK_DEADLINE_S), sent))


def test_three_256_mib_uploads_without_a_key_are_401s_without_being_buffered(roomy):
    results: list[tuple[int | None, int]] = []
    threads = [threading.Thread(target=push_unauthenticated_upload, args=(roomy, 256 << 20, results))
               for _ in range(3)]
    with Watch(roomy) as watch:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    print(f"\n[attack] (status, bytes sent) {results} after {elapsed:.3f} s")
    assert [status for status, _ in results] == [401, 401, 401]
    assert elapsed < ATTACK_DEADLINE_S and all(sent < 64 << 20 for _, sent in results), results
    watch.check()


# 4. engine-internal fields in a chat or completion


def engine_successes(engine_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{engine_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


CHAT = {"messages": [{"role": "user", "content": "The greenhouse door was"}], "max_tokens": 1,
        "memory": {"inject": False, "write": False}}
COMPLETION = {"prompt": "The greenhouse door was", "max_tokens": 1}


@pytest.mark.parametrize("path, body, field", [
    ("/v1/chat/completions", {**CHAT, "kv_transfer_params": {"memsidecar_pin": True}}, "kv_transfer_params"),
    ("/v1/chat/completions", {**CHAT, "cache_salt": "tenant:tenant-a"}, "cache_salt"),
    ("/v1/chat/completions", {**CHAT, "priority": -100}, "priority"),
    ("/v1/chat/completions", {**CHAT, "request_id": "someone-elses"}, "request_id"),
    ("/v1/chat/completions", {**CHAT, "vllm_xargs": {"kv": 1}}, "vllm_xargs"),
    ("/v1/chat/completions", {**CHAT, "chat_template": "{{ 7 * 7 }}"}, "chat_template"),
    ("/v1/chat/completions", {**CHAT, "some_new_engine_knob": 1}, "some_new_engine_knob"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x", "cache_salt": "y"}]},
     "messages.0.cache_salt"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}]}]}, "messages.0.content"),
    ("/v1/completions", {**COMPLETION, "kv_transfer_params": {"memsidecar_pin": True}}, "kv_transfer_params"),
    ("/v1/completions", {**COMPLETION, "prompt_embeds": "AAAA"}, "prompt_embeds"),
    ("/v1/completions", {**COMPLETION, "lora_request": {"lora_name": "x"}}, "lora_request"),
])
def test_engine_internal_fields_are_400s_naming_them_and_never_reach_the_engine(sidecar, engine_port, path, body,
                                                                                field):
    before = engine_successes(engine_port)
    response, _ = refused_at_once(sidecar, lambda: httpx.post(f"{sidecar.base_url}{path}", json=body,
                                                              headers=auth("tenant-a"), timeout=60))
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"].startswith(field), error
    assert field.rsplit(".", 1)[-1] in error["message"]
    assert engine_successes(engine_port) == before
    served = httpx.post(f"{sidecar.base_url}{path}", json=CHAT if "chat" in path else COMPLETION,
                        headers=auth("tenant-b"), timeout=120)
    assert served.status_code == 200, served.text


# 5. unbounded path parameters


@pytest.mark.parametrize("method, path, param", [
    ("GET", "/v1/memories/" + "m" * 129, "memory_id"),
    ("PATCH", "/v1/memories/bad%20id", "memory_id"),
    ("DELETE", "/v1/kbs/" + "k" * 200, "kb_id"),
    ("POST", "/v1/kbs/%3Cscript%3E/documents", "kb_id"),
    ("GET", "/v1/adapters/" + "n" * 65, "name"),
    ("DELETE", "/v1/adapters/a@v1", "name"),
    ("POST", "/v1/adapters/..hidden/load", "name"),
    ("GET", "/v1/adapters/jobs/" + "j" * 300, "job_id"),
    ("DELETE", "/v1/activations/pin/" + "p" * 300, "pin_id"),
    ("DELETE", "/v1/adapters/x?version=" + "9" * 40, "version"),
])
def test_path_parameters_out_of_pattern_are_400s_naming_them(sidecar, method, path, param):
    response, _ = refused_at_once(sidecar, lambda: httpx.request(
        method, f"{sidecar.base_url}{path}", headers=auth("tenant-a"), json={}, timeout=30))
    assert response.status_code == 400 and response.json()["error"]["param"].endswith(param), response.text


@pytest.mark.parametrize("memory_id", ["../../v1/adapters/x/load", "..", "a/b", "x" * 200, "%2e%2e"])
def test_the_console_checks_the_memory_id_it_forwards_into_an_api_path(sidecar, memory_id):
    with httpx.Client(base_url=sidecar.base_url, timeout=30) as client:
        assert client.post("/console/signin", data={"api_key": API_KEYS["tenant-b"]}).status_code == 303
        response, _ = refused_at_once(sidecar, lambda: client.get("/console/lifecycle",
                                                                    params={"memory_id": memory_id}))
    assert response.status_code == 400 and "memory_id" in response.text


# 6. a safetensors header with bad data_offsets


def edited_header(weights: bytes, edit) -> bytes:
    """The safetensors bytes with `edit(tensors)` applied to the header's tensor entries (the data unchanged)."""
    length = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8:8 + length])
    edit({key: entry for key, entry in header.items() if key != "__metadata__"})
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + weights[8 + length:]


def as_floats(tensors: dict) -> None:
    for entry in tensors.values():
        entry["data_offsets"] = [float(offset) for offset in entry["data_offsets"]]


def overlapping(tensors: dict) -> None:
    """Two tensors of one size share a byte range (the other's bytes are left unaccounted for)."""
    by_size: dict[int, dict] = {}
    for entry in tensors.values():
        start, end = entry["data_offsets"]
        if end - start in by_size:
            entry["data_offsets"] = list(by_size[end - start]["data_offsets"])
            return
        by_size[end - start] = entry
    raise AssertionError("no two tensors of one size")


def bool_start(tensors: dict) -> None:
    first = next(entry for entry in tensors.values() if entry["data_offsets"][0] == 0)
    first["data_offsets"][0] = False


def shifted(by: int):
    def shift(tensors: dict) -> None:
        for entry in tensors.values():
            entry["data_offsets"] = [offset + by for offset in entry["data_offsets"]]
    return shift


@pytest.mark.parametrize("edit", [as_floats, overlapping, bool_start, shifted(-(2 ** 40)), shifted(2 ** 70)],
                         ids=["floats", "overlapping", "bool", "negative", "huge"])
def test_bad_safetensors_data_offsets_are_a_400_not_a_500(sidecar, adapter_dir, edit):
    weights = edited_header((adapter_dir / "adapter_model.safetensors").read_bytes(), edit)
    response, _ = refused_at_once(sidecar, lambda: upload(sidecar, zipped(adapter_dir, weights=weights)))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "adapter_model.safetensors"
