"""Textual and tool memory: extraction, FAISS + lexical search, lifecycle and token-budgeted selection.

Not built yet (issue 6). This is memsidecar's package, not the Textual TUI framework: `memsidecar doctor` fails if
that distribution is ever installed beside it, since both claim the top-level name `textual`.
"""
