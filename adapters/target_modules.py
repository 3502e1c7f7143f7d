"""Which of the base model's linear layers a PEFT config's `target_modules` selects, in bounded time.

PEFT accepts three forms, and so does this module: a list of module names (a name matches a module equal to it or
ending in "." + it), the string "all-linear", or any other string as a regular expression the whole module name
must match. An uploaded regex is hostile until proven otherwise: Python's `re` backtracks, so `(.*.*)*Z` holds
the GIL for hours on one module name. Patterns are therefore matched with RE2, whose time is linear in the name's
length, after a length check (`MAX_PATTERN_CHARS`) and with its compiled program capped (`MAX_PATTERN_MEMORY`).
RE2 has no backreferences or lookarounds; a pattern using them is refused, naming the field.

Every refusal is an InvalidAdapterError on `target_modules` with status 422.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import re2

from adapters.errors import UNPROCESSABLE, InvalidAdapterError
from memcore.units import MIB

FIELD = "target_modules"
ALL_LINEAR = "all-linear"
MAX_PATTERN_CHARS = 512
MAX_NAMES = 256
MAX_NAME_CHARS = 256
MAX_PATTERN_MEMORY = MIB


def targeted_modules(targets: object, linear: Mapping[str, object]) -> frozenset[str]:
    """The names in `linear` (module name -> anything) that `targets` selects; refuses a form PEFT does not know,
    an over-long pattern or list, and a selection of nothing."""
    known = f"the base model's linear layers are {', '.join(_leaf_names(linear))}"
    if targets == ALL_LINEAR:
        return frozenset(linear)
    if isinstance(targets, str):
        selected = _matching_pattern(targets, linear)
        if not selected:
            _refuse(f"{targets!r} matches no linear layer; {known}")
        return selected
    return _matching_names(_checked_names(targets, known), linear, known)


def _matching_pattern(pattern: str, linear: Mapping[str, object]) -> frozenset[str]:
    if len(pattern) > MAX_PATTERN_CHARS:
        _refuse(f"a regular expression of {len(pattern)} characters is too long: at most {MAX_PATTERN_CHARS}")
    options = re2.Options()
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        _refuse(f"{pattern!r} is not a regular expression RE2 accepts ({detail}); lookarounds and backreferences "
                "are not supported, list the module names instead")
    return frozenset(name for name in linear if compiled.fullmatch(name))


def _checked_names(targets: object, known: str) -> list[str]:
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        _refuse(f"must be a non-empty list of module names, {ALL_LINEAR!r} or a regular expression; {known}")
    if len(targets) > MAX_NAMES or any(len(target) > MAX_NAME_CHARS for target in targets):
        _refuse(f"at most {MAX_NAMES} module names of at most {MAX_NAME_CHARS} characters each are accepted")
    return targets


def _matching_names(targets: list[str], linear: Mapping[str, object], known: str) -> frozenset[str]:
    selected: set[str] = set()
    for target in targets:
        matches = {m for m in linear if m == target or m.endswith("." + target)}
        if not matches:
            _refuse(f"{target!r} is not a linear layer of the base model; {known}")
        selected |= matches
    return frozenset(selected)


def _leaf_names(linear: Mapping[str, object]) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name in linear})


def _refuse(message: str) -> NoReturn:
    raise InvalidAdapterError(FIELD, message, UNPROCESSABLE)
