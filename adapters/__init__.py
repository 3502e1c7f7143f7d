"""Parametric memory: a registry of LoRA adapters on the served base model, their residency, and distillation.

Engine-free core: `names` (name and id rules), `archive` (safe unpacking of uploads), `base_model` (the base
model's linear layers), `validation` (a PEFT adapter checked against them), `record` (one adapter version and its
stored format) and `registry` (blobs, versions, visibility and bindings, persisted). Errors, each with the HTTP
status it maps to, are in `errors`.
"""
