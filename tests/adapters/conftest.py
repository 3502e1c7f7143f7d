"""Fixtures for the adapter registry: real PEFT adapters of the tiny model, archives of them, registries."""

from __future__ import annotations

import io
import shutil
import tarfile
import zlib
import zipfile
from pathlib import Path

import pytest

from adapters.base_model import BaseModelShape
from adapters.registry import AdapterRegistry
from adapters.synthetic import random_adapter

MAX_RANK = 8
MAX_UPLOAD = 1 << 20
BASE = "base-fingerprint-1"


class Clock:
    """A settable clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_peft_adapter(model_dir: Path, out: Path, seed: int, **lora) -> Path:
    """A PEFT LoRA adapter of the model with random non-zero weights, saved with safetensors."""
    options = dict(lora)
    return random_adapter(model_dir, out, seed, options.pop("r", 8), options.pop("target_modules"),
                          options.pop("lora_alpha", None), **options)


@pytest.fixture(scope="session")
def peft_adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """qv: r=8 on q/v; mlp: r=4 on the MLP; regex: r=2 by regex; rank16: r=16 (over MAX_RANK)."""
    root = tmp_path_factory.mktemp("peft")
    kinds = {
        "qv": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
        "mlp": {"r": 4, "lora_alpha": 8, "target_modules": ["gate_proj", "up_proj", "down_proj"]},
        "regex": {"r": 2, "lora_alpha": 4, "target_modules": r".*\.layers\.1\.self_attn\.(k_proj|o_proj)"},
        "rank16": {"r": 16, "lora_alpha": 16, "target_modules": ["q_proj"]},
    }
    return {kind: make_peft_adapter(tiny_model, root / kind, seed, **lora)
            for seed, (kind, lora) in enumerate(kinds.items())}


@pytest.fixture(scope="session")
def base_shape(tiny_model) -> BaseModelShape:
    return BaseModelShape.load(tiny_model)


@pytest.fixture
def adapter_copy(peft_adapters, tmp_path):
    """A writable copy of one of the session's adapters, for a test to break."""
    def copy(kind: str = "qv") -> Path:
        target = tmp_path / f"copy-{kind}"
        shutil.copytree(peft_adapters[kind], target)
        return target
    return copy


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_registry(tmp_path, base_shape, clock):
    """Opens registries on one root (several times, to test persistence); closes them all at the end."""
    opened = []

    def open_(base_fingerprint: str = BASE, max_upload_bytes: int = MAX_UPLOAD) -> AdapterRegistry:
        registry = AdapterRegistry.open(tmp_path / "registry", base_fingerprint, MAX_RANK, base_shape,
                                        max_upload_bytes, clock=clock)
        opened.append(registry)
        return registry

    yield open_
    for registry in opened:
        registry.close()


@pytest.fixture
def registry(open_registry) -> AdapterRegistry:
    return open_registry()


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], gzip: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive_of(directory: Path, kind: str = "zip", folder: str | None = None) -> bytes:
    """The files of `directory` as a zip, tar or tgz, optionally under one top-level folder."""
    members = {(f"{folder}/{name}" if folder else name): data for name, data in files_of(directory).items()}
    return zip_bytes(members) if kind == "zip" else tar_bytes(members, gzip=kind == "tgz")


def extended_header_bomb(declared: int, inflated: int, kind: bytes = tarfile.GNUTYPE_LONGNAME) -> bytes:
    """A .tar.gz whose first header is a GNU long name (or PAX header) declaring `declared` bytes, followed by
    `inflated` zero bytes: `tarfile` reads the declared body whole before anything can look at it."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = kind, declared
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
    parts = [packer.compress(info.tobuf(tarfile.GNU_FORMAT))]
    zeros = bytes(1 << 20)
    for start in range(0, inflated, len(zeros)):
        parts.append(packer.compress(zeros[:min(len(zeros), inflated - start)]))
    return b"".join(parts) + packer.flush()
