"""Activation memory: KV-cache blocks saved to RAM / LMDB / Redis tiers and loaded back instead of recomputed.

Modules: `keys` (namespaces and chained block keys), `fingerprint` (model and adapter ids), `block_format` (the one
encoding of a block), `tier` (the tier protocol), `ram_tier` / `lmdb_tier` / `remote_tier` (the tiers), `policy`
(pure eviction and promotion planning), `store` (`TieredStore`, what the connector calls), `transfer_plan` and
`connector` (the vLLM side; `connector` is the only module that imports vLLM).
"""
