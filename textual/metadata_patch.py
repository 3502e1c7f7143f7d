"""How a caller's metadata change applies to a memory: a JSON merge patch (RFC 7386) that never drops provenance.

Rules, in RFC 7386 terms: a patch object merges into the metadata key by key; a key whose patch value is `null` is
removed; a nested object merges recursively; any other value (a list, a string, a number) replaces the old one.
Invariant: the keys the system writes to record where a memory came from, `PROTECTED_KEYS`, keep their stored value
(or stay absent) whatever the patch says about them; the patch's values for them are ignored. Pure.
"""

from __future__ import annotations

from typing import Any, Mapping

from textual.errors import InvalidMemoryError

# history: earlier wordings (merge, correction); feedback: counts of each feedback kind; supersedes / superseded_by:
# the link between a changed value and the value it replaced.
PROTECTED_KEYS = frozenset({"history", "feedback", "supersedes", "superseded_by"})
MAX_DEPTH = 32


def merge_patch(target: Any, patch: Any, depth: int = 0) -> Any:
    """RFC 7386 MergePatch(target, patch)."""
    if depth > MAX_DEPTH:
        raise InvalidMemoryError("metadata", f"is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, depth + 1)
    return result


def patched_metadata(metadata: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` after the merge `patch`, with every protected key as it was."""
    if not isinstance(patch, Mapping) or not all(isinstance(key, str) for key in patch):
        raise InvalidMemoryError("metadata", "must be a JSON object with string keys (a merge patch)")
    result = merge_patch(metadata, {key: value for key, value in patch.items() if key not in PROTECTED_KEYS})
    return result
