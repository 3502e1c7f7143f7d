"""A small HTTP client of a running sidecar's adapter API, for the `memsidecar adapters` commands."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ClientError(Exception):
    """The sidecar refused the request, or could not be reached; the message says which and why."""


class AdapterClient:
    def __init__(self, url: str, api_key: str | None, timeout_s: float = 600.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def upload_directory(self, directory: Path, name: str) -> dict[str, Any]:
        missing = [file for file in ADAPTER_FILES if not (directory / file).is_file()]
        if missing:
            raise ClientError(f"{directory} lacks {', '.join(missing)}: save the adapter with PEFT's save_pretrained")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file in ADAPTER_FILES:
                archive.write(directory / file, file)
        return self._call("POST", "/v1/adapters", params={"name": name}, content=buffer.getvalue(),
                          headers={"content-type": "application/zip"})

    def distill(self, data: Path, name: str, max_steps: int | None, console: Console) -> dict[str, Any]:
        examples = []
        for number, line in enumerate(data.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    examples.append(json.loads(line))
                except ValueError as exc:
                    raise ClientError(f"{data}:{number}: not JSON ({exc})") from None
        body = {"name": name, "examples": examples, **({"max_steps": max_steps} if max_steps else {})}
        job = self._call("POST", "/v1/adapters/distill", json=body)
        with Progress(console=console) as progress:
            task = progress.add_task(f"distilling {name}", total=None)
            while job["status"] in ("queued", "running"):
                time.sleep(1)
                job = self._call("GET", f"/v1/adapters/jobs/{job['id']}")
                if job["progress"]:
                    loss = job["progress"]["loss"]
                    progress.update(task, completed=job["progress"]["step"], total=job["progress"]["total"],
                                    description=f"distilling {name} (loss {loss:.3f})" if loss else None)
        return job

    def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **options)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the sidecar: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise ClientError(f"HTTP {response.status_code}: {message}")
        return response.json()
