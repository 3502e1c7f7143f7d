"""Reading LoCoMo's evidence ids, and the end-to-end benchmark's question plan over the real development split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.e2e import Settings, count_prompts, last_evidence_session, plan
from bench.locomo import evidence_ids

DEV_SPLIT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo_dev.json"


def test_evidence_ids_split_entries_and_read_the_datasets_typos_as_meant():
    assert evidence_ids(["D1:3", "D2:4; D2:5", "D3:1 D3:2"]) == {"D1:3", "D2:4", "D2:5", "D3:1", "D3:2"}
    assert evidence_ids(["D:11:26", "D20:21"]) == {"D11:26", "D20:21"}
    assert evidence_ids(["D1:18", "D", "D1:20"]) == {"D1:18", "D1:20"}
    assert evidence_ids(["", "D"]) == set()


def test_a_question_is_asked_after_the_session_of_its_latest_evidence():
    assert last_evidence_session({"evidence": ["D1:14", "D:11:26", "D4:7"]}) == 11


@pytest.mark.skipif(not DEV_SPLIT.exists(), reason="needs ../shared/data/locomo")
def test_the_whole_development_split_can_be_planned():
    samples = json.loads(DEV_SPLIT.read_text())
    work = plan(samples, None)
    asked = [qa for _, by_session in work for questions in by_session.values() for qa in questions]
    assert len(asked) == 883  # categories 1-4 with evidence: what bench.locomo scores too
    for sample, by_session in work:
        sessions = sum(1 for key in sample["conversation"] if key.startswith("session_") and key[8:].isdigit())
        assert all(1 <= number <= sessions for number in by_session)
    assert len([qa for _, by_session in plan(samples[:1], 8) for qs in by_session.values() for qa in qs]) == 8


@pytest.mark.skipif(not DEV_SPLIT.exists(), reason="needs ../shared/data/locomo")
def test_counting_prompts_without_an_engine_replays_the_memory_path(tiny_model, tmp_path):
    samples = json.loads(DEV_SPLIT.read_text())[:1]
    line = count_prompts(tiny_model, tmp_path, plan(samples, 3), Settings(max_model_len=2048, memory_token_budget=300))
    assert line["requests"] == 3 and "baseline_ttft_s_p50" not in line
    assert 300 < line["baseline_prompt_tokens_mean"] <= 2048, "the history, truncated to the context"
    assert 0 < line["sidecar_prompt_tokens_mean"] < line["baseline_prompt_tokens_mean"]
    assert 0.0 <= line["sidecar_evidence_recall"] <= 1.0
