"""LoCoMo's answer scores: token F1 and BLEU-1 of a predicted answer against the gold one. Pure.

As LoCoMo's own evaluation computes them: both texts are normalized (lower-cased, punctuation and the articles
a/an/the removed, whitespace collapsed) and split into Porter-stemmed tokens. Per category:
- multi-hop (1): the gold answer is split on commas; each gold part scores its best F1 against the prediction's
  comma-separated parts, and the parts' scores are averaged;
- open-domain (3): only the gold answer's first alternative (before `;`) counts;
- temporal (2) and single-hop (4): plain token F1.
BLEU-1 is clipped unigram precision times the brevity penalty, over the same tokens.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache

import Stemmer

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("porter")


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower().translate(PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    """The Porter-stemmed tokens of the normalized text."""
    return _stemmer().stemWords(normalize(text).split())


def token_f1(prediction: str, gold: str) -> float:
    predicted, wanted = tokens(prediction), tokens(gold)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def answer_f1(prediction: str, gold: str, category: int) -> float:
    """LoCoMo's F1 for one question of `category` (see the module docstring)."""
    gold = str(gold)
    if category == 1:
        predictions = [part.strip() for part in prediction.split(",")]
        parts = [part.strip() for part in gold.split(",")]
        return sum(max(token_f1(p, part) for p in predictions) for part in parts) / len(parts)
    if category == 3:
        gold = gold.split(";")[0].strip()
    return token_f1(prediction, gold)


def bleu1(prediction: str, gold: str) -> float:
    """Clipped unigram precision times the brevity penalty; 0 for an empty prediction."""
    predicted, wanted = tokens(prediction), tokens(gold)
    if not predicted or not wanted:
        return 0.0
    clipped = sum((Counter(predicted) & Counter(wanted)).values())
    penalty = 1.0 if len(predicted) > len(wanted) else math.exp(1 - len(wanted) / len(predicted))
    return penalty * clipped / len(predicted)
