"""The search pipeline over one tenant: dense + lexical candidates, fusion, scoring, neighbours, budget.

Steps, each a pure function elsewhere: filter -> FAISS and BM25 top `depth` (and BM25 per part of a multi-part
question) -> (query expansion: FAISS and BM25 again with the query expanded from the best first-pass memories, see
`expansion`) -> (second hop: BM25 with the entities of the best memories so far) -> reciprocal rank fusion ->
neighbour spreading -> speaker/time/importance/recency factors -> de-duplication -> greedy selection under the
token budget -> rendering. Only memories passing the filters, and not expired, are ever scored, neighbours included.
`rank` scores one index (the resident one, or a throwaway one over cold memories) and `finish` selects among the
candidates of all ranked indexes; their scores are comparable as both come from the same fusion and factors.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import AbstractSet, Iterator, Mapping, Sequence

import numpy as np

from textual import context
from textual.entities import entity_words
from textual.expansion import feedback_terms, hop_terms, rocchio
from textual.filters import Filters
from textual.fusion import ranked, reciprocal_rank_fusion
from textual.lexical_index import Analyzer
from textual.memory import Memory
from textual.query import QueryPlan, split_question
from textual.scoring import ScoringWeights, final_scores
from textual.selection import Candidate, best_first, near_unique, take_within_budget
from textual.tenant_index import TenantIndex
from textual.tokens import count_tokens

DEFAULT_DEPTH = 100


@dataclass(frozen=True)
class SearchSettings:
    """How deep each retriever looks, how lists are fused and scored, and how results are de-duplicated.

    Query expansion is on when `feedback_docs` > 0: that many best first-pass memories give `feedback_terms`
    words to the lexical query and `feedback_beta` of their mean vector to the dense one; the two expanded lists
    join the fusion with `feedback_weight` each. A multi-part question ("adopting Toby and Buddy") adds one lexical
    list per part (`query.split_question`) with `split_weight` each. The second hop is on when `hop_docs` > 0: the
    entity words (`entities`) of that many best memories after feedback give the lexical query up to `hop_terms`
    more terms, and that list joins the fusion with `hop_weight` (only when the question matched some memory
    lexically: else the entity words alone would make the list); all lists share one fusion, so the token budget
    is spent once over both hops.
    """

    depth: int = DEFAULT_DEPTH
    rrf_k: float = 10.0
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    dedupe_threshold: float = 0.9
    max_candidates: int = 200
    cold_fallback_similarity: float = 0.35
    feedback_docs: int = 3
    feedback_terms: int = 10
    feedback_beta: float = 0.5
    feedback_weight: float = 0.5
    split_weight: float = 0.5
    hop_docs: int = 5
    hop_terms: int = 5
    hop_weight: float = 0.5
    weights: ScoringWeights = field(default_factory=ScoringWeights)


@dataclass(frozen=True)
class Hit:
    """A returned memory and its final score."""

    memory: Memory
    score: float


@dataclass(frozen=True)
class SearchResult:
    """Hits best first, and the exact text to inject for them with its token count."""

    hits: tuple[Hit, ...]
    context: str
    context_tokens: int


@dataclass(frozen=True)
class Ranking:
    """The best-scored candidates of one index, best first (`(id, score)`, at most `max_candidates`, not yet
    de-duplicated), the memories they refer to (the index's own mapping: read it under the tenant lock that `rank`
    ran under), and the best cosine similarity seen (how well the index matched at all: 0.0 when nothing passed the
    filters)."""

    scored: tuple[tuple[str, float], ...]
    memories: Mapping[str, Memory]
    best_similarity: float


def retrieve(index: TenantIndex, analyzer: Analyzer, query_vector: np.ndarray, plan: QueryPlan, filters: Filters,
             k: int, budget_tokens: int | None, now: float, settings: SearchSettings) -> SearchResult:
    """The best memories for `plan` among those passing `filters`: at most `k`, rendering to <= `budget_tokens`."""
    return finish([rank(index, analyzer, query_vector, plan, filters, now, settings)], k, budget_tokens, settings)


def rank(index: TenantIndex, analyzer: Analyzer, query_vector: np.ndarray, plan: QueryPlan, filters: Filters,
         now: float, settings: SearchSettings) -> Ranking:
    """The scored candidates of one index for `plan` among memories passing `filters`."""
    allowed, expired = index.passing(filters), index.expired(now)
    if expired:
        allowed = allowed - expired
    if not allowed:
        return Ranking((), {}, 0.0)
    scores, best_similarity = _fused(index, analyzer, query_vector, plan, allowed, settings)
    neighbours = {key: tuple(n for n in near if n in allowed) for key, near in index.neighbours(scores).items()}
    scores = final_scores(scores, neighbours, index.memories, plan, now, settings.weights)
    best = ranked(scores, settings.max_candidates)
    return Ranking(tuple((key, scores[key]) for key in best), index.memories, best_similarity)


def finish(rankings: Sequence[Ranking], k: int, budget_tokens: int | None, settings: SearchSettings) -> SearchResult:
    """At most `k` of all rankings' candidates, de-duplicated within and across them, rendering to <=
    `budget_tokens`. Candidates are built, de-duplicated and costed lazily, best first, and only until the `k`-th
    is chosen: with `k` 10 that is a tenth of the `max_candidates` of each ranking or less."""
    streams = [near_unique(_candidates(ranking), settings.dedupe_threshold) for ranking in rankings]
    pooled = near_unique(heapq.merge(*streams, key=best_first), settings.dedupe_threshold) \
        if len(streams) > 1 else streams[0] if streams else iter(())
    chosen = take_within_budget(pooled, budget_tokens, k)
    hits = tuple(Hit(next(r.memories[c.key] for r in reversed(rankings) if c.key in r.memories), c.score)
                 for c in chosen)
    text = context.render([hit.memory for hit in hits])
    return SearchResult(hits, text, count_tokens(text))


def _candidates(ranking: Ranking) -> Iterator[Candidate]:
    return (_candidate(ranking.memories[key], score) for key, score in ranking.scored)


def _fused(index: TenantIndex, analyzer: Analyzer, query_vector: np.ndarray, plan: QueryPlan,
           allowed: AbstractSet[str], settings: SearchSettings) -> tuple[dict[str, float], float]:
    everything = len(allowed) == len(index.memories)
    dense_rows = None if everything else index.positions(index.vectors.ids, allowed)
    lexical_allowed = None if everything else allowed
    terms = analyzer.terms(plan.lexical_text)
    dense = index.vectors.search(query_vector, settings.depth, dense_rows)
    lexical = index.lexical().search(terms, settings.depth, lexical_allowed)
    lists = [[key for key, _ in dense], [key for key, _ in lexical]]
    weights = [settings.dense_weight, settings.lexical_weight]
    if settings.split_weight > 0:
        parts = split_question(plan.lexical_text, analyzer.stopwords)
        for part in parts if len(parts) > 1 else ():
            lists.append([key for key, _ in index.lexical().search(analyzer.terms(part), settings.depth,
                                                                   lexical_allowed)])
            weights.append(settings.split_weight)
    fused = reciprocal_rank_fusion(lists, k=settings.rrf_k, weights=weights)
    if settings.feedback_docs > 0 and fused:
        expanded = _expanded(index, query_vector, terms, ranked(fused, settings.feedback_docs), dense_rows,
                             lexical_allowed, settings)
        fused = reciprocal_rank_fusion(expanded, settings.rrf_k, [settings.feedback_weight] * 2, base=fused)
    if settings.hop_docs > 0 and lexical:  # a hop extends a lexical match, never replaces one
        hop = _hop(index, analyzer, terms, plan, ranked(fused, settings.hop_docs), lexical_allowed, settings)
        fused = reciprocal_rank_fusion([hop], settings.rrf_k, [settings.hop_weight], base=fused)
    return fused, max((score for _, score in dense), default=0.0)


def _hop(index: TenantIndex, analyzer: Analyzer, terms: list[str], plan: QueryPlan, first: list[str],
         lexical_allowed: set[str] | None, settings: SearchSettings) -> list[str]:
    """The lexical candidates of the question plus the entities of its `first` best memories (see `hop_terms`)."""
    words = index.lexical()
    entities = [analyzer.stems(entity_words(index.memories[key].content, analyzer.stopwords)) for key in first]
    extra = hop_terms(entities, terms, set(analyzer.stems(sorted(plan.names))), words.document_frequency,
                      len(words), settings.hop_terms)
    return [key for key, _ in words.search(terms + extra, settings.depth, lexical_allowed)] if extra else []


def _expanded(index: TenantIndex, query_vector: np.ndarray, terms: list[str], feedback: list[str],
              dense_rows: list[int] | None, lexical_allowed: set[str] | None,
              settings: SearchSettings) -> list[list[str]]:
    """The dense and lexical candidate lists of the query expanded from the `feedback` memories."""
    words = index.lexical()
    vector = rocchio(query_vector, index.vectors.vectors_of(feedback), settings.feedback_beta)
    extra = feedback_terms([words.document_terms(key) for key in feedback], terms, words.document_frequency,
                           len(words), settings.feedback_terms)
    return [[key for key, _ in index.vectors.search(vector, settings.depth, dense_rows)],
            [key for key, _ in words.search(terms + extra, settings.depth, lexical_allowed)]]


def _candidate(memory: Memory, score: float) -> Candidate:
    return Candidate(key=memory.id, score=score, cost=context.line_cost(memory), group=context.header(memory),
                     group_cost=context.header_cost(memory), text=memory.content)
