import pytest
from hypothesis import given, strategies as st

from textual.fusion import normalized_score_sum, ranked, reciprocal_rank_fusion


def test_rrf_rewards_agreement_between_lists():
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "a"]], k=10)
    assert ranked(scores) == ["b", "a", "c"]
    assert scores["b"] == pytest.approx(1 / 12 + 1 / 11)


def test_rrf_weights_favour_a_list():
    scores = reciprocal_rank_fusion([["a"], ["b"]], k=10, weights=[1.0, 2.0])
    assert ranked(scores) == ["b", "a"]


def test_rrf_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0])


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), unique=True), max_size=4))
def test_rrf_scores_exactly_the_union(rankings):
    scores = reciprocal_rank_fusion(rankings)
    assert set(scores) == {key for ranking in rankings for key in ranking}
    assert all(value > 0 for value in scores.values())


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), unique=True), max_size=5), st.integers(0, 5))
def test_rrf_on_a_base_equals_fusing_all_lists_at_once(rankings, cut):
    weights = [0.5 + i for i in range(len(rankings))]
    first = reciprocal_rank_fusion(rankings[:cut], weights=weights[:cut])
    assert reciprocal_rank_fusion(rankings[cut:], weights=weights[cut:], base=first) == \
        reciprocal_rank_fusion(rankings, weights=weights)


def test_normalized_sum_scales_each_list_to_unit_range():
    fused = normalized_score_sum([{"a": 10.0, "b": 0.0}, {"a": 0.2, "b": 0.4}])
    assert fused == {"a": 1.0, "b": 1.0}
    assert normalized_score_sum([{"a": 3.0}]) == {"a": 1.0}
