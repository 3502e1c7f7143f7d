"""Parametric memory: a LoRA adapter registry, residency across engine / CPU / disk, and distillation.

Not built yet (issue 5); the package exists so the layout and the import checks are in place.
"""
