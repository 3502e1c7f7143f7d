"""Query expansion by pseudo-relevance feedback: the best memories of a first pass lend the query their words and
their direction in embedding space, and a second pass searches with the expanded query. Pure functions.

- Lexical (RM3-style): each term of the feedback memories is weighted by its share of each memory's terms, summed,
  times its inverse document frequency; the best `count` terms the query does not already have are added to it.
- Dense (Rocchio): the query vector plus `beta` times the feedback vectors' mean, normalised to unit length.

A question about "the charity race" finds the turn that names it; feedback adds that turn's other words ("mental
health", "5K") and direction, which find the other turns of the same topic that the question alone misses.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Collection, Sequence

import numpy as np


def feedback_terms(documents: Sequence[Sequence[str]], query_terms: Collection[str],
                   document_frequency: Callable[[str], int], total_documents: int, count: int) -> list[str]:
    """The `count` best expansion terms from the feedback `documents` (term lists), best first, ties by term.

    Terms already in `query_terms` are never returned; `document_frequency(term)` is the number of indexed
    documents holding `term` out of `total_documents`.
    """
    if count <= 0:
        return []
    weights: Counter[str] = Counter()
    for terms in documents:
        for term, occurrences in Counter(terms).items():
            weights[term] += occurrences / len(terms)
    excluded = set(query_terms)
    scored = {term: weight * math.log(1.0 + total_documents / max(1, document_frequency(term)))
              for term, weight in weights.items() if term not in excluded}
    return sorted(scored, key=lambda term: (-scored[term], term))[:count]


def rocchio(query: np.ndarray, feedback: np.ndarray, beta: float) -> np.ndarray:
    """`query + beta * mean(feedback rows)`, unit length (the query itself when there is no feedback)."""
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if len(feedback) == 0 or beta == 0:
        return query
    vector = query + beta * np.asarray(feedback, dtype=np.float32).reshape(len(feedback), -1).mean(axis=0)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else query


def hop_terms(first: Sequence[Sequence[str]], query_terms: Collection[str], excluded: Collection[str],
              document_frequency: Callable[[str], int], total_documents: int, count: int) -> list[str]:
    """The second hop's expansion: the `count` best of the entity terms of the first pass's best memories
    (`first`: one list of stemmed entity words per memory, best memory first), scored as `feedback_terms` does.

    `excluded` terms (the speakers the question names, which link every turn of theirs) are never returned, nor
    are `query_terms`. The question "Which city did both visit?" finds a turn naming Rome; the hop adds "rome" and
    so finds the other speaker's turn about Rome that shares no word with the question.
    """
    documents = [[term for term in terms if term not in excluded] for terms in first]
    return feedback_terms([terms for terms in documents if terms], query_terms, document_frequency,
                          total_documents, count)
