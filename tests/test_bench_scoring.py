"""LoCoMo's answer scores, pinned on hand-worked examples."""

from __future__ import annotations

import pytest

from bench.scoring import answer_f1, bleu1, normalize, token_f1, tokens


def test_normalize_drops_case_punctuation_and_articles():
    assert normalize("The Cat, a dog; AN apple!") == "cat dog apple"


def test_tokens_are_porter_stemmed():
    assert tokens("running runs") == ["run", "run"]


def test_token_f1_on_partial_overlap():
    # prediction {7, may, 2023} vs gold {7, may}: precision 2/3, recall 1 -> F1 0.8
    assert token_f1("7 May 2023", "7 May") == pytest.approx(0.8)
    assert token_f1("Paris", "the paris") == 1.0
    assert token_f1("", "paris") == 0.0


def test_multi_hop_answers_split_on_commas_and_average_the_best_matches():
    # gold parts "pottery" and "painting": the first is found, the second is not -> 0.5
    assert answer_f1("pottery, camping", "pottery, painting", category=1) == pytest.approx(0.5)


def test_open_domain_keeps_the_first_alternative():
    assert answer_f1("yes", "yes; she likes it", category=3) == 1.0
    assert answer_f1("yes", "yes; she likes it", category=4) < 1.0


def test_bleu1_has_a_brevity_penalty():
    assert bleu1("paris", "paris france") == pytest.approx(0.3679, abs=1e-4)  # exp(1 - 2/1)
    assert bleu1("paris france", "paris france") == 1.0
    assert bleu1("", "paris") == 0.0
