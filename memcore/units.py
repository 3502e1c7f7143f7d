"""Byte units, binary: every `*_gib` setting and byte budget in the project is converted here, nowhere else."""

from __future__ import annotations

MIB = 2**20
GIB = 2**30


def gib_to_bytes(gib: float) -> int:
    """`gib` GiB in whole bytes (rounded down), as the `*_gib` settings are turned into byte budgets."""
    return int(gib * GIB)
