"""Token counting for budgets: a token is one regex piece `\\w+|[^\\w\\s]` of the injected text.

Invariant: pieces never span whitespace, so the count of texts joined by newlines is the sum of their counts.
"""

from __future__ import annotations

import re

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Number of `\\w+|[^\\w\\s]` pieces in `text`."""
    return len(TOKEN_PATTERN.findall(text))
