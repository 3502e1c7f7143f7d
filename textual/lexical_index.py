"""A tenant's BM25 index (bm25s), derived from memory contents and rebuilt whole when they change.

Terms are lower-cased `\\w+` words, English stopwords removed, Snowball-stemmed (PyStemmer), so the same
`Analyzer` must tokenize documents and queries.
"""

from __future__ import annotations

import re
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

    def search(self, terms: Sequence[str], k: int, allowed: Sequence[int] | None = None) -> list[tuple[str, float]]:
        """Up to `k` (id, score) pairs with a positive score, best first, among `allowed` positions if given."""
        if self._retriever is None or not terms or k <= 0:
            return []
        scores = np.asarray(self._retriever.get_scores(list(terms)), dtype=np.float64)
        if allowed is not None:
            mask = np.zeros(len(scores), dtype=bool)
            mask[np.asarray(allowed, dtype=np.int64)] = True
            scores = np.where(mask, scores, 0.0)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[row], float(scores[row])) for row in top if scores[row] > 0]
