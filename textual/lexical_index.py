"""A tenant's BM25 index (bm25s), derived from memory contents and rebuilt whole when they change.

Terms are lower-cased `\\w+` words, English stopwords removed, Snowball-stemmed (PyStemmer), so the same
`Analyzer` must tokenize documents and queries.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import bm25s
import numpy as np
import Stemmer

WORD = re.compile(r"\w+")
QUESTION_WORDS = frozenset({"did", "does", "do", "what", "when", "who", "whom", "how", "why", "which", "where", "s"})


class Analyzer:
    """Text to index terms: lower-case words, stopwords dropped, stemmed."""

    def __init__(self, language: str = "english") -> None:
        self._stemmer = Stemmer.Stemmer(language)
        self.stopwords = frozenset(bm25s.stopwords.STOPWORDS_EN) | QUESTION_WORDS

    def words(self, text: str) -> list[str]:
        """Lower-cased words of `text` that are not stopwords, unstemmed."""
        return [word for word in WORD.findall(text.lower()) if word not in self.stopwords]

    def stems(self, words: Sequence[str]) -> list[str]:
        return self._stemmer.stemWords(list(words))

    def terms(self, text: str) -> list[str]:
        return self.stems(self.words(text))


class LexicalIndex:
    """BM25 over a fixed list of documents; `ids[position]` is the memory id of each document."""

    def __init__(self, ids: Sequence[str], retriever: bm25s.BM25 | None) -> None:
        self.ids = list(ids)
        self._retriever = retriever

    @classmethod
    def build(cls, ids: Sequence[str], documents: Sequence[Sequence[str]]) -> "LexicalIndex":
        """Index documents given as term lists (from `Analyzer.terms`)."""
        if not ids:
            return cls([], None)
        retriever = bm25s.BM25()
        retriever.index([list(terms) for terms in documents], show_progress=False)
        return cls(ids, retriever)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, terms: Sequence[str], k: int, allowed: Sequence[int] | None = None,
               excluded: Sequence[int] = ()) -> list[tuple[str, float]]:
        """Up to `k` (id, score) pairs with a positive score, best first, among `allowed` positions if given and
        never at `excluded` positions."""
        if self._retriever is None or not terms or k <= 0:
            return []
        scores = self._retriever.get_scores(list(terms))  # float32, as bm25s sums them: a float64 copy costs ~1 ms
        if allowed is not None:
            mask = np.zeros(len(scores), dtype=bool)
            mask[np.asarray(allowed, dtype=np.int64)] = True
            scores = np.where(mask, scores, 0.0)
        if len(excluded):
            scores[np.asarray(excluded, dtype=np.int64)] = 0.0
        return [(self.ids[row], float(scores[row])) for row in top_positive_rows(scores, k)]


def top_positive_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """The rows of the `k` highest positive scores, best first, ties in row order: the positive ones among the first
    `k` of a stable argsort of `-scores`. Linear in the documents and sorting only `k`: sorting a million scores (or
    `np.partition` over that many, half of them positive for a question of common words) costs 10-20 ms, and a
    search ranks BM25 3-5 times. So the rows are first cut to those scoring at least the `k`-th best of a strided
    sample of ~sqrt(k * n) scores: the `k`-th best of any subset is no better than the `k`-th best of all, so every
    row of the result survives the cut, and the cut leaves about as many rows as the sample had."""
    stride = max(1, int(len(scores) / math.sqrt(max(k, 1) * len(scores) + 1)))
    sample = scores[::stride]
    floor = -np.partition(-sample, k - 1)[k - 1] if stride > 1 and len(sample) >= k else 0.0
    rows = np.flatnonzero(scores >= floor) if floor > 0 else np.flatnonzero(scores > 0)
    if len(rows) > k:
        values = scores[rows]
        kth = -np.partition(-values, k - 1)[k - 1]  # the k-th highest score
        above = rows[values > kth]
        rows = np.concatenate([above, rows[values == kth][:k - len(above)]])
    return rows[np.argsort(-scores[rows], kind="stable")]


class LayeredLexicalIndex:
    """BM25 over a changing set of documents that does not re-index everything after each change.

    Invariant: every current document is in exactly one of `main` (built at some point, minus its `stale` ids,
    whose document changed or went away) and `recent` (documents added or changed since main was built). `recent`
    is small and rebuilt on the first search after a change; `main` is rebuilt from the kept term lists once recent
    and stale together exceed `rebuild_fraction` of it (at least `min_rebuild`), so a stream of writes costs an
    amortized fraction of a full build each. The two parts have their own BM25 statistics, so their scores compare
    only roughly; results are merged by score, and rank fusion uses only the order.
    """

    def __init__(self, min_rebuild: int = 512, rebuild_fraction: float = 0.1) -> None:
        self.min_rebuild = min_rebuild
        self.rebuild_fraction = rebuild_fraction
        self._terms: dict[str, list[str]] = {}
        self._document_frequency: Counter[str] = Counter()
        self._main = LexicalIndex([], None)
        self._main_rows: dict[str, int] = {}
        self._stale: set[str] = set()
        self._recent_ids: set[str] = set()
        self._recent: LexicalIndex | None = None

    def __len__(self) -> int:
        return len(self._terms)

    def upsert(self, doc_id: str, terms: Sequence[str]) -> None:
        """Add a document, or replace the terms of one already indexed."""
        self._forget_terms(doc_id)
        self._terms[doc_id] = list(terms)
        self._document_frequency.update(set(terms))
        if doc_id in self._main_rows:
            self._stale.add(doc_id)
        self._recent_ids.add(doc_id)
        self._recent = None

    def remove(self, doc_id: str) -> None:
        if doc_id not in self._terms:
            return
        self._forget_terms(doc_id)
        del self._terms[doc_id]
        if doc_id in self._main_rows:
            self._stale.add(doc_id)
        if doc_id in self._recent_ids:
            self._recent_ids.discard(doc_id)
            self._recent = None

    def document_terms(self, doc_id: str) -> list[str]:
        """The indexed terms of a document (empty for an unknown id)."""
        return self._terms.get(doc_id, [])

    def document_frequency(self, term: str) -> int:
        """How many current documents hold `term`."""
        return self._document_frequency[term]

    def _forget_terms(self, doc_id: str) -> None:
        old = self._terms.get(doc_id)
        if old is not None:
            self._document_frequency.subtract(set(old))
            for term in set(old):
                if self._document_frequency[term] <= 0:
                    del self._document_frequency[term]

    def search(self, terms: Sequence[str], k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Up to `k` (id, score) pairs with a positive score, best first, among `allowed` ids if given."""
        self._refresh()
        main_rows = None if allowed is None else [self._main_rows[key] for key in allowed if key in self._main_rows]
        stale_rows = [self._main_rows[key] for key in self._stale]
        recent_rows = None if allowed is None else [row for row, key in enumerate(self._recent.ids) if key in allowed]
        found = self._main.search(terms, k, main_rows, stale_rows) + self._recent.search(terms, k, recent_rows)
        return sorted(found, key=lambda pair: -pair[1])[:k]

    def _refresh(self) -> None:
        if len(self._recent_ids) + len(self._stale) > max(self.min_rebuild,
                                                           self.rebuild_fraction * len(self._main_rows)):
            ids = list(self._terms)
            self._main = LexicalIndex.build(ids, [self._terms[i] for i in ids])
            self._main_rows = {key: row for row, key in enumerate(ids)}
            self._stale, self._recent_ids, self._recent = set(), set(), None
        if self._recent is None:
            ids = sorted(self._recent_ids)
            self._recent = LexicalIndex.build(ids, [self._terms[i] for i in ids])
