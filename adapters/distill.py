"""Distillation: a tenant's memories trained into a LoRA adapter of the served base model, with PEFT.

Rules:
- An example (`adapters.examples`) is a plain text (every token is trained) or a question/answer pair: the question
  is rendered with the base model's chat template, as the sidecar will ask it, and the loss is on the answer tokens
  only (the prompt's labels are -100). A fact becomes such pairs first, with questions written by the base model
  before training starts. Every example ends with the end-of-sequence token, so the adapter learns to stop.
- Deterministic: one spec gives the same batches, losses and weights on one device. The seed is applied inside a
  forked RNG, so the process's global torch RNG is left as it was.
- Cancellation is checked between steps (`cancel`, a threading.Event): a cancelled run raises `DistillCancelled`
  and writes nothing.
- The adapter is saved with safetensors only, into a staging directory beside `output_dir` that is renamed into
  place when complete: `output_dir` either does not exist or holds a whole adapter. It must not exist (or be empty)
  when distillation starts.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import DistillError
from adapters.examples import MAX_EXAMPLES, Example, expand_facts
from adapters.fact_questions import write_questions

IGNORE_INDEX = -100
FALLBACK_PROMPT = "Question: {question}\nAnswer: "  # for a base model without a chat template

ProgressCallback = Callable[[int, int, float], None]


class DistillCancelled(Exception):
    """The run was cancelled between steps; nothing was written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"distillation cancelled after {step} steps")
        self.step = step


@dataclass(frozen=True)
class DistillSpec:
    """What to train: a LoRA of `rank`/`alpha` on `target_modules` of the model in `base_model_dir`, saved to
    `output_dir` (`("all-linear",)`: PEFT's every linear layer but the output head). Each fact example becomes up
    to `questions_per_fact` question/answer pairs. It runs `epochs` passes over the examples, stopping early at
    `max_steps` if given. `device`: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"."""

    base_model_dir: Path
    output_dir: Path
    examples: tuple[Example, ...]
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    epochs: int = 8
    learning_rate: float = 1e-3
    max_steps: int | None = None
    batch_size: int = 4
    max_length: int = 512
    questions_per_fact: int = 4
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_model_dir", Path(self.base_model_dir))
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not self.examples or len(self.examples) > MAX_EXAMPLES:
            raise DistillError("examples", f"give 1 to {MAX_EXAMPLES} examples, not {len(self.examples)}")
        if not all(isinstance(e, Example) for e in self.examples):
            raise DistillError("examples", "must be Example values")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise DistillError("target_modules", f"give one or more module names, not {self.target_modules!r}")
        _check_range("rank", self.rank, 1, 256)
        _check_range("epochs", self.epochs, 1, 1000)
        _check_range("batch_size", self.batch_size, 1, 1024)
        _check_range("max_length", self.max_length, 8, 32768)
        _check_range("questions_per_fact", self.questions_per_fact, 1, 32)
        if self.max_steps is not None:
            _check_range("max_steps", self.max_steps, 1, 1_000_000)
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise DistillError("alpha", f"must be a number > 0, not {self.alpha!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate <= 1):
            raise DistillError("learning_rate", f"must be a number in (0, 1], not {self.learning_rate!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DistillError("device", f"{self.device!r}: use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class DistillResult:
    """A finished run: one loss per step (`losses`), the examples trained (facts expanded), where the adapter is."""

    steps: int
    losses: tuple[float, ...]
    first_loss: float
    last_loss: float
    output_dir: Path
    seconds: float
    examples: int


def _check_range(field: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise DistillError(field, f"must be an integer from {low} to {high}, not {value!r}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError("device", f"{device!r} was asked for but CUDA is not available; use cpu or auto")
    return device


def encode_example(tokenizer, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example, truncated to `max_length`; labels are -100 on the prompt."""
    if example.is_fact:
        raise DistillError("example", "a fact is encoded as the question/answer pairs `expand_facts` makes of it")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if example.is_qa:
        prompt = _prompt_ids(tokenizer, example.question)
        target = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + eos
    else:
        prompt, target = [], tokenizer(example.text, add_special_tokens=True)["input_ids"] + eos
    input_ids = (prompt + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
    if sum(label != IGNORE_INDEX for label in labels[1:]) == 0:
        raise DistillError("max_length", f"{max_length} tokens leave nothing of the example to learn; raise it")
    return input_ids, labels


def _prompt_ids(tokenizer, question: str) -> list[int]:
    if tokenizer.chat_template:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return tokenizer(FALLBACK_PROMPT.format(question=question), add_special_tokens=True)["input_ids"]


def plan_batches(num_examples: int, batch_size: int, epochs: int, max_steps: int | None, seed: int
                 ) -> list[list[int]]:
    """Example indices of each step: each epoch a seeded shuffle cut into batches, capped at `max_steps`."""
    rng = random.Random(seed)
    batches = []
    for _ in range(epochs):
        order = list(range(num_examples))
        rng.shuffle(order)
        batches += [order[i:i + batch_size] for i in range(0, num_examples, batch_size)]
    return batches[:max_steps] if max_steps is not None else batches


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int, device: str) -> dict:
    """Right-padded tensors for one batch: padding is masked from attention and loss."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    pad = [width - len(ids) for ids, _ in encoded]
    batch = {
        "input_ids": [ids + [pad_id] * n for (ids, _), n in zip(encoded, pad)],
        "attention_mask": [[1] * len(ids) + [0] * n for (ids, _), n in zip(encoded, pad)],
        "labels": [labels + [IGNORE_INDEX] * n for (_, labels), n in zip(encoded, pad)],
    }
    return {name: torch.tensor(rows, dtype=torch.long, device=device) for name, rows in batch.items()}


def distill(spec: DistillSpec, on_progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None) -> DistillResult:
    """Train and save the adapter of `spec`. Progress goes to `on_progress(step, total_steps, loss)` after each
    step, or to a progress bar on the terminal when no callback is given."""
    import torch

    _check_output_dir(spec.output_dir)
    device = resolve_device(spec.device)
    started = time.monotonic()
    with torch.random.fork_rng(devices=_cuda_indices(device)):
        torch.manual_seed(spec.seed)
        model, tokenizer = _build_model(spec, device)
        with model.disable_adapter():  # the base model writes the questions
            examples = expand_facts(spec.examples, lambda fact: write_questions(
                model, tokenizer, fact, spec.questions_per_fact, samples=3 * spec.questions_per_fact))
        encoded = [encode_example(tokenizer, e, spec.max_length) for e in examples]
        batches = plan_batches(len(encoded), spec.batch_size, spec.epochs, spec.max_steps, spec.seed)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        steps = [[encoded[i] for i in batch] for batch in batches]
        with contextlib.nullcontext(on_progress) if on_progress else _progress_bar(len(steps)) as report:
            losses = _train(model, spec, steps, pad_id, device, report, cancel)
    _save(model, spec.output_dir)
    return DistillResult(len(losses), tuple(losses), losses[0], losses[-1], spec.output_dir,
                         time.monotonic() - started, len(encoded))


def _train(model, spec: DistillSpec, batches: list, pad_id: int, device: str, on_progress: ProgressCallback,
           cancel: threading.Event | None) -> list[float]:
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate,
                                  weight_decay=0.0)
    model.train()
    losses = []
    for step, batch in enumerate(batches, start=1):
        if cancel is not None and cancel.is_set():
            raise DistillCancelled(step - 1)
        loss = model(**collate(batch, pad_id, device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        if not math.isfinite(value):
            raise DistillError("learning_rate", f"the loss became {value} at step {step}; lower the learning rate")
        losses.append(value)
        on_progress(step, len(batches), value)
    return losses


def _build_model(spec: DistillSpec, device: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.base_model_dir)
    # LoRA training in float32 on CPU (bfloat16 matmuls there are slow and lossy); the model's own dtype on GPU.
    dtype = torch.float32 if device == "cpu" else "auto"
    base = AutoModelForCausalLM.from_pretrained(spec.base_model_dir, dtype=dtype).to(device)
    targets = "all-linear" if spec.target_modules == ("all-linear",) else list(spec.target_modules)
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=targets,
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(base, config), tokenizer
    except ValueError as error:  # PEFT names the target modules it could not find
        raise DistillError("target_modules", str(error)) from None


def _cuda_indices(device: str) -> list[int]:
    if not device.startswith("cuda"):
        return []
    return [int(device.split(":", 1)[1])] if ":" in device else [0]


def _check_output_dir(output_dir: Path) -> None:
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise DistillError("output_dir", f"{output_dir} already exists and is not empty")


def _save(model, output_dir: Path) -> None:
    """save_pretrained (safetensors) into a staging directory, renamed onto `output_dir` when whole."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.staging-{secrets.token_hex(4)}")
    try:
        model.save_pretrained(staging, safe_serialization=True)
        os.rename(staging, output_dir)  # atomic; fails if output_dir appeared meanwhile and is not empty
    except OSError as error:
        raise DistillError("output_dir", f"cannot write the adapter to {output_dir}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[ProgressCallback]:
    """A rich progress bar over `total` steps on the terminal, fed by the callback it yields."""
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), "loss {task.fields[loss]:.4f}") as progress:
        task = progress.add_task("distilling", total=total, loss=float("nan"))
        yield lambda step, _total, loss: progress.update(task, completed=step, loss=loss)
