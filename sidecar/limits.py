"""What a request may ask of memory: the id syntax, the most results and tokens, the type and tier names. Shared by
the HTTP schemas and the chat path's memory options; `textual` re-checks every value it is given."""

from __future__ import annotations

from typing import Literal

ID_REGEX = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_TOP_K = 100
MAX_TOKEN_BUDGET = 32_000
MemoryTypeName = Literal["fact", "preference", "event", "episode", "tool_schema", "tool_trajectory", "image",
                         "document_chunk"]
TierName = Literal["hot", "warm", "cold", "archived"]
