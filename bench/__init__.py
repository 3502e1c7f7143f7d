"""Benchmarks: plain scripts run as `python -m bench.<name> [--json]`, each printing one JSON line last."""
