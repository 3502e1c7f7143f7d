"""The chat path: pick the engine model (or the tenant's adapter), bound the engine's concurrency, inject memories
into the prompt, forward to the engine, relay the answer, and write the conversation back to memory afterwards."""
