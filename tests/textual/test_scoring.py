"""Final scores: the time-window factor reads when a turn was said and the time it speaks of. Pure."""

from datetime import datetime, timezone

from textual.memory import Memory, MemoryType
from textual.messages import ChatMessage, episode_metadata
from textual.query import plan_query
from textual.scoring import ScoringWeights, adjust_scores, final_scores


def ts(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, tzinfo=timezone.utc).timestamp()


STORED = ts(2023, 6, 3)  # the same for all, so recency does not tell them apart


def episode(key: str, text: str, said_at: float) -> Memory:
    metadata = episode_metadata(ChatMessage(speaker="Mel", text=text, time=said_at, session="s1"), 0)
    return Memory(id=key, tenant="t", user="u", type=MemoryType.EPISODE, content=text, created_at=said_at,
                  updated_at=STORED, last_access_at=STORED, metadata=metadata)


def test_a_turn_speaking_of_last_month_is_boosted_for_a_question_about_that_month():
    memories = {"then": episode("then", "Last month I ran a charity race", ts(2023, 6, 3)),
                "other": episode("other", "I ran a charity race", ts(2023, 6, 3)),
                "said": episode("said", "I ran a charity race today", ts(2023, 5, 20))}
    assert memories["then"].metadata["mentioned_time"] == [ts(2023, 5, 1), ts(2023, 6, 1)]
    assert "mentioned_time" not in memories["other"].metadata
    plan = plan_query("What race did Mel run in May 2023?", ["Mel"])
    scores = adjust_scores({key: 1.0 for key in memories}, memories, plan, ts(2023, 7, 1), ScoringWeights())
    assert scores["then"] == scores["said"] > scores["other"]


def said_by(key: str, speaker: str, position: int) -> Memory:
    metadata = episode_metadata(ChatMessage(speaker=speaker, text=key, time=STORED, session="s1"), position)
    return Memory(id=key, tenant="t", user="u", type=MemoryType.EPISODE, content=key, created_at=STORED,
                  updated_at=STORED, last_access_at=STORED, metadata=metadata)


def test_a_neighbour_inherits_a_share_of_the_retrieval_score_but_not_the_speaker_factor():
    memories = {"hit": said_by("hit", "Mel", 0), "reply": said_by("reply", "Caro", 1),
                "own": said_by("own", "Mel", 5)}
    plan = plan_query("What does Mel paint?", ["Mel", "Caro"])
    weights = ScoringWeights(importance_weight=0.0, recency_weight=0.0)
    scores = final_scores({"hit": 1.0, "reply": 0.1, "own": 0.2}, {"hit": ("reply",)}, memories, plan, STORED,
                          weights)
    assert scores["hit"] == weights.speaker_boost * 1.0
    assert scores["own"] == weights.speaker_boost * 0.2
    assert scores["reply"] == 0.1 + weights.neighbour_share * 1.0
    assert scores["own"] > scores["reply"]
