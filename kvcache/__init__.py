"""Activation memory: KV-cache blocks saved to RAM / LMDB / Redis tiers and loaded back instead of recomputed.

Not built yet (issue 4); the package exists so the layout and the import checks are in place.
"""
