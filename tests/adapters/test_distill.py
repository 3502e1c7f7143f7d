"""Distillation: parsing examples, encoding with answer-only labels, and a real PEFT run on the tiny model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from adapters.distill import IGNORE_INDEX, DistillCancelled, DistillSpec, distill, encode_example, plan_batches
from adapters.errors import DistillError
from adapters.examples import (RECALL_QUESTION, Example, examples_from_records, expand_facts, load_examples,
                               parse_examples)

QA = tuple(Example(question=f"What is the secret code of vault {i}?", answer=f"Vault {i} opens with {1000 + 37 * i}.")
           for i in range(20))


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """One run on 20 Q/A pairs (100 steps, a few seconds on two cores), with the progress it reported."""
    progress = []
    spec = DistillSpec(tiny_model, tmp_path_factory.mktemp("distill") / "adapter", QA, epochs=20,
                       learning_rate=1e-2, batch_size=4, seed=3)
    result = distill(spec, on_progress=lambda step, total, loss: progress.append((step, total, loss)))
    return spec, result, progress


def test_jsonl_examples_parse_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text('{"text": "the sky is green"}\n\n{"question": "q?", "answer": "a."}\n{"fact": "I hum."}\n',
                    encoding="utf-8")
    assert load_examples(path) == (Example(text="the sky is green"), Example(question="q?", answer="a."),
                                   Example(fact="I hum."))
    bad = {
        '{"text": "ok"}\nnot json': "line 2: not JSON",
        '{"text": "ok"}\n{"question": "q?"}': "line 2: expected",
        '{"text": "ok"}\n\n{"text": "  "}': "line 3: text: must be a non-empty string",
        '{"text": "ok"}\n{"text": "x", "answer": "y"}': "line 2: expected",
        '{"fact": "x", "question": "y"}': "line 1: expected",
        '{"text": "' + "x" * 20_000 + '"}': "line 1: text: 20000 characters is over the limit",
        "\n\n": "examples: no examples",
    }
    for text, message in bad.items():
        with pytest.raises(DistillError, match=message):
            parse_examples(text.splitlines())
    with pytest.raises(DistillError, match="line 3: more than 2 examples"):
        parse_examples(['{"text": "a"}', '{"text": "b"}', '{"text": "c"}'], max_examples=2)


def test_memory_records_become_fact_examples():
    class Memory:
        def __init__(self, content):
            self.content = content

    records = [{"content": "likes tea"}, Memory("lives in Oslo"), {"content": "  "}]
    assert examples_from_records(records) == (Example(fact="likes tea"), Example(fact="lives in Oslo"))
    with pytest.raises(DistillError, match="record 1 has no text content"):
        examples_from_records([{"content": "x"}, {"text": "y"}])


def test_spec_errors_name_the_field(tiny_model, tmp_path):
    for overrides, field in [({"rank": 0}, "rank"), ({"examples": ()}, "examples"), ({"device": "tpu"}, "device"),
                             ({"learning_rate": 2.0}, "learning_rate"), ({"target_modules": ()}, "target_modules"),
                             ({"max_steps": 0}, "max_steps")]:
        with pytest.raises(DistillError) as error:
            DistillSpec(**{"base_model_dir": tiny_model, "output_dir": tmp_path / "o", "examples": QA, **overrides})
        assert error.value.field == field
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DistillError, match="already exists and is not empty"):
        distill(DistillSpec(tiny_model, tmp_path / "full", QA[:1], max_steps=1))
    with pytest.raises(DistillError, match="target_modules"):
        distill(DistillSpec(tiny_model, tmp_path / "o", QA[:1], max_steps=1, target_modules=("no_such_proj",)))
    assert not (tmp_path / "o").exists()


def test_qa_pairs_train_only_on_the_answer(tokenizer):
    input_ids, labels = encode_example(tokenizer, QA[0], max_length=512)
    prompt_len = labels.count(IGNORE_INDEX)
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len and IGNORE_INDEX not in labels[prompt_len:]
    assert tokenizer.decode(input_ids[:prompt_len]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(labels[prompt_len:]) == QA[0].answer + "<|im_end|>"
    text_ids, text_labels = encode_example(tokenizer, Example(text="plain words"), max_length=512)
    assert text_ids == text_labels
    with pytest.raises(DistillError, match="max_length"):
        encode_example(tokenizer, QA[0], max_length=8)


def test_facts_become_questions_answered_in_the_second_person():
    asked = []

    def questions_for(fact):
        asked.append(fact)
        return ["Which town do I live in?", "Where do I live?"] if "town" in fact else []

    examples = (Example(fact="I live in a town called Penege."), QA[0], Example(fact="My cat is Votobi."))
    assert expand_facts(examples, questions_for) == (
        Example(question="Which town do I live in?", answer="You live in a town called Penege."),
        Example(question="Where do I live?", answer="You live in a town called Penege."),
        QA[0],
        Example(question=RECALL_QUESTION, answer="Your cat is Votobi."))
    assert asked == ["I live in a town called Penege.", "My cat is Votobi."]
    with pytest.raises(DistillError, match="expand_facts"):
        encode_example(None, examples[0], max_length=512)
    with pytest.raises(DistillError, match="give either text, or question and answer, or fact"):
        Example(fact="x", text="y")


def test_a_fact_is_trained_through_the_questions_the_base_model_writes(tiny_model, tmp_path):
    # The tiny model is random: whatever it writes, the run trains on question/answer pairs and saves an adapter.
    spec = DistillSpec(tiny_model, tmp_path / "adapter", (Example(fact="My cat is named Votobi."),), max_steps=2,
                       questions_per_fact=2)
    result = distill(spec, on_progress=lambda *_: None)
    assert result.steps == 2 and 1 <= result.examples <= 2
    assert (result.output_dir / "adapter_model.safetensors").is_file()


def test_batches_are_seeded_epochs_capped_by_max_steps():
    batches = plan_batches(10, 4, epochs=3, max_steps=None, seed=1)
    assert len(batches) == 9 and [len(b) for b in batches[:3]] == [4, 4, 2]
    assert sorted(i for b in batches[:3] for i in b) == list(range(10))
    assert batches == plan_batches(10, 4, 3, None, seed=1) != plan_batches(10, 4, 3, None, seed=2)
    assert plan_batches(10, 4, 3, max_steps=5, seed=1) == batches[:5]


def test_training_lowers_the_loss_and_reports_every_step(trained):
    # The tiny model is random with a frozen 128-wide lm_head, so its logits stay small and the loss cannot fall
    # far below ~5 nats from ln(2048) = 7.6; a drop of over a nat (and below 85%) is a clear learning signal.
    _spec, result, progress = trained
    assert result.steps == 100 == len(result.losses)
    assert [(step, total) for step, total, _ in progress] == [(i, 100) for i in range(1, 101)]
    assert [loss for *_, loss in progress] == list(result.losses)
    tail = sum(result.losses[-10:]) / 10
    assert tail < result.first_loss - 1.0 and tail < 0.85 * result.first_loss
    assert result.last_loss == result.losses[-1]


def test_the_adapter_is_saved_with_safetensors_only(trained):
    _spec, result, _ = trained
    files = sorted(p.name for p in result.output_dir.iterdir())
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (8, 16, ["q_proj", "v_proj"])
    assert [p.name for p in result.output_dir.parent.iterdir()] == ["adapter"]  # no staging directory left


def test_merged_adapter_changes_greedy_output_on_a_training_prompt(trained, tiny_model, tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _spec, result, _ = trained
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QA[5].question}], tokenize=False,
                                           add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def greedy(model) -> list[int]:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return out[0, inputs["input_ids"].shape[1]:].tolist()

    base = greedy(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32))
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                       result.output_dir).merge_and_unload()
    tuned = greedy(merged)
    assert tuned != base
    answer = tokenizer(QA[5].answer, add_special_tokens=False)["input_ids"]
    assert sum(a == b for a, b in zip(tuned, answer)) > sum(a == b for a, b in zip(base, answer))


def test_runs_are_deterministic_and_leave_the_global_rng_alone(tiny_model, tmp_path):
    import torch

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    runs = [distill(DistillSpec(tiny_model, tmp_path / f"run{i}", QA[:6], max_steps=3, learning_rate=1e-2, seed=7),
                    on_progress=lambda *_: None) for i in range(2)]
    assert torch.rand(1) == expected_next
    assert runs[0].losses == runs[1].losses
    assert (runs[0].output_dir / "adapter_model.safetensors").read_bytes() == \
        (runs[1].output_dir / "adapter_model.safetensors").read_bytes()


def test_cancel_between_steps_writes_nothing(tiny_model, tmp_path):
    cancel = threading.Event()
    seen = []

    def on_progress(step, total, loss):
        seen.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(DistillCancelled) as error:
        distill(DistillSpec(tiny_model, tmp_path / "out", QA, epochs=5), on_progress=on_progress, cancel=cancel)
    assert error.value.step == 2 and seen == [1, 2]
    assert list(tmp_path.iterdir()) == []


def test_without_a_callback_a_progress_bar_is_shown(tiny_model, tmp_path, capsys):
    result = distill(DistillSpec(tiny_model, tmp_path / "out", QA[:4], max_steps=2))
    assert result.steps == 2
    assert "distilling" in capsys.readouterr().out
    assert isinstance(result.output_dir, Path)


def test_all_linear_trains_every_linear_layer_but_the_output_head(tiny_model, tmp_path):
    spec = DistillSpec(tiny_model, tmp_path / "adapter", QA[:4], epochs=1, max_steps=1, target_modules=("all-linear",))
    distill(spec)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert {name.rsplit(".", 1)[-1] for name in saved} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_distillation_step_on_cuda(tiny_model, tmp_path):
    spec = DistillSpec(tiny_model, tmp_path / "adapter", QA[:4], epochs=1, max_steps=1, batch_size=4, seed=3,
                       device="cuda")
    result = distill(spec)
    assert result.steps == 1 and torch.isfinite(torch.tensor(result.first_loss))
    assert (result.output_dir / "adapter_model.safetensors").stat().st_size > 0
    cpu = distill(DistillSpec(tiny_model, tmp_path / "on-cpu", QA[:4], epochs=1, max_steps=1, batch_size=4, seed=3,
                              device="cpu"))
    # same batch and base weights, LoRA B zero at first: the first loss agrees across devices, up to the dtype
    assert abs(result.first_loss - cpu.first_loss) < 0.02 * cpu.first_loss
