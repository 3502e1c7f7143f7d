"""The filter language of search and list: a JSON tree parsed once into a pure, typed predicate over a `Memory`.

Shape (every node is a JSON object):
- `{"and": [node, ...]}`, `{"or": [node, ...]}` (1 or more nodes each), `{"not": node}`;
- `{FIELD: {OP: value, ...}}`: every operator given must hold; `{FIELD: value}` is short for `{FIELD: {"eq": value}}`;
- an object with several keys is the `and` of one-key objects.
FIELD is a built-in field (`BUILTIN_FIELDS`) or `metadata.KEY`, where KEY may descend into nested objects with
more dots (`metadata.place.city`); a metadata key holding a dot cannot be named.
Operators: `eq`, `ne` (a scalar: string, number, boolean or null), `in` (a list of scalars), `gt`, `gte`, `lt`,
`lte` (a number or a string), `contains` (a string).

Semantics: a missing field reads as null. `eq` is JSON equality (1 == 1.0, but true != 1); `ne` is its negation, so
it holds for a missing field; `in` holds when `eq` holds for one listed value; the order comparisons hold only when
the field and the value are both numbers or both strings (never across kinds, never for a missing field);
`contains` on a string field is a case-insensitive substring test (a plain substring, never a pattern), on a list
field a test that one element `eq`s the value, and false on anything else.

Bounds (`FilterLimits`): nesting depth, number of nodes and of `contains`, `in` list length, string lengths and field
path length, so
that evaluating a filter costs at most a fixed number of steps per memory. Every refusal is an InvalidMemoryError
whose field is the path of the bad node, e.g. `filter.and[1].metadata.topic.eq`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

from textual.errors import InvalidMemoryError
from textual.memory import LifecycleTier, Memory, MemoryType

ROOT = "filter"
_MISSING = None  # a missing field and a null read the same


class Op(str, enum.Enum):
    """A comparison operator of the language."""

    EQ = "eq"  # equal: 1 equals 1.0, true does not equal 1; a missing field reads as null
    NE = "ne"  # not equal (so it holds for a missing field)
    IN = "in"  # equal to one of at most `max_in` values
    GT = "gt"  # greater than: numbers with numbers, strings with strings, never across kinds
    GTE = "gte"  # greater than or equal
    LT = "lt"  # less than
    LTE = "lte"  # less than or equal
    CONTAINS = "contains"  # a case-insensitive plain substring (never a regex); on a list, has this element


ORDER_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})
LOGICAL = ("and", "or", "not")

# Built-in fields and how each is read from a memory.
BUILTIN_FIELDS: dict[str, Callable[[Memory], Any]] = {
    "id": lambda m: m.id, "user_id": lambda m: m.user, "agent_id": lambda m: m.agent, "run_id": lambda m: m.run,
    "space_id": lambda m: m.space, "kb_id": lambda m: m.kb_id, "type": lambda m: m.type.value,
    "tier": lambda m: m.tier.value, "content": lambda m: m.content, "source": lambda m: list(m.source),
    "created_at": lambda m: m.created_at, "updated_at": lambda m: m.updated_at,
    "last_access_at": lambda m: m.last_access_at, "importance": lambda m: m.importance,
    "strength": lambda m: m.strength, "access_count": lambda m: m.access_count,
}
NUMERIC_FIELDS = frozenset({"created_at", "updated_at", "last_access_at", "importance", "strength", "access_count"})
NAMED_VALUES = {"type": frozenset(t.value for t in MemoryType), "tier": frozenset(t.value for t in LifecycleTier)}


@dataclass(frozen=True)
class FilterLimits:
    """How large a filter may be: a filter within them costs at most `max_nodes` comparisons (each on strings of at
    most `max_string` characters, or `in` lists of at most `max_in` values), `max_contains` of them substring
    tests, per memory."""

    max_depth: int = 8
    max_nodes: int = 32
    max_contains: int = 4  # `contains` reads a whole content (up to the store's limit): the costliest operator
    max_in: int = 100
    max_string: int = 512
    max_field_chars: int = 256
    max_field_parts: int = 8


@dataclass(frozen=True)
class Compare:
    """`field` `op` `value`; `path` is the field split on dots (`("metadata", "topic")` or `("created_at",)`); the
    value of `in` is its `scalar_keys`, so that its test is one set lookup."""

    path: tuple[str, ...]
    op: Op
    value: Any

    def matches(self, memory: Memory) -> bool:
        return holds(self.op, field_value(memory, self.path), self.value)


@dataclass(frozen=True)
class All:
    """Every part holds."""

    parts: tuple["Predicate", ...]

    def matches(self, memory: Memory) -> bool:
        return all(part.matches(memory) for part in self.parts)


@dataclass(frozen=True)
class AnyOf:
    """At least one part holds."""

    parts: tuple["Predicate", ...]

    def matches(self, memory: Memory) -> bool:
        return any(part.matches(memory) for part in self.parts)


@dataclass(frozen=True)
class Not:
    """The part does not hold."""

    part: "Predicate"

    def matches(self, memory: Memory) -> bool:
        return not self.part.matches(memory)


Predicate = Union[Compare, All, AnyOf, Not]


def parse_filter(tree: object, limits: FilterLimits = FilterLimits(), root: str = ROOT) -> Predicate:
    """The predicate of a JSON filter tree; InvalidMemoryError naming the path of the first bad node, starting with
    `root` (the name of the field that held the tree)."""
    parser = _Parser(limits)
    return parser.node(tree, root, 1)


def as_predicate(filter_or_tree: object, limits: FilterLimits = FilterLimits()) -> Predicate:
    """`filter_or_tree` if it is a parsed predicate already, else the predicate its JSON tree parses to."""
    if isinstance(filter_or_tree, (Compare, All, AnyOf, Not)):
        return filter_or_tree
    return parse_filter(filter_or_tree, limits)


def field_value(memory: Memory, path: tuple[str, ...]) -> Any:
    """The value at `path` in `memory` (None when absent)."""
    if path[0] != "metadata":
        return BUILTIN_FIELDS[path[0]](memory)
    value: Any = memory.metadata
    for part in path[1:]:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def holds(op: Op, actual: Any, expected: Any) -> bool:
    """Whether `actual op expected` holds (see the module docstring for each operator)."""
    if op is Op.EQ:
        return _equal(actual, expected)
    if op is Op.NE:
        return not _equal(actual, expected)
    if op is Op.IN:
        return _scalar_key(actual) in expected
    if op is Op.CONTAINS:
        if isinstance(actual, str):
            return expected.casefold() in actual.casefold()
        return isinstance(actual, list) and any(_equal(item, expected) for item in actual)
    if not _comparable(actual, expected):
        return False
    if op is Op.GT:
        return actual > expected
    if op is Op.GTE:
        return actual >= expected
    if op is Op.LT:
        return actual < expected
    return actual <= expected


def scalar_keys(values: Iterable[Any]) -> frozenset:
    """The operand of `in`: scalar values keyed so that set membership is `eq` (1 and 1.0 alike, true apart)."""
    return frozenset(_scalar_key(value) for value in values)


def _scalar_key(value: Any) -> tuple[str, Any] | None:
    if isinstance(value, bool):
        return "bool", value
    if _is_number(value):
        return "number", value
    if value is None or isinstance(value, str):
        return "scalar", value
    return None  # a list or an object equals no scalar


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if _is_number(actual) and _is_number(expected):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def _comparable(actual: Any, expected: Any) -> bool:
    return (_is_number(actual) and _is_number(expected)) or (isinstance(actual, str) and isinstance(expected, str))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Parser:
    """One parse: counts nodes against the limits as it goes."""

    def __init__(self, limits: FilterLimits) -> None:
        self.limits = limits
        self.nodes = 0
        self.contains = 0

    def node(self, tree: object, where: str, depth: int) -> Predicate:
        self._count(where, depth)
        if not isinstance(tree, dict) or not tree:
            raise InvalidMemoryError(where, "must be a non-empty object such as {\"metadata.topic\": {\"eq\": \"x\"}}")
        if len(tree) > 1:
            return All(tuple(self.node({key: value}, where, depth + 1) for key, value in tree.items()))
        (key, value), = tree.items()
        if key in ("and", "or"):
            return self._logical(key, value, f"{where}.{key}", depth)
        if key == "not":
            return Not(self.node(value, f"{where}.not", depth + 1))
        return self._field(key, value, f"{where}.{key}", depth)

    def _logical(self, key: str, value: object, where: str, depth: int) -> Predicate:
        if not isinstance(value, list) or not value:
            raise InvalidMemoryError(where, "must be a non-empty list of filters")
        parts = tuple(self.node(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        return All(parts) if key == "and" else AnyOf(parts)

    def _field(self, name: str, value: object, where: str, depth: int) -> Predicate:
        path = self._path(name, where)
        if not isinstance(value, dict):
            return self._compare(path, Op.EQ.value, value, f"{where}.eq")
        if not value:
            raise InvalidMemoryError(where, "must name at least one operator: " + ", ".join(op.value for op in Op))
        compares = [self._compare(path, op, operand, f"{where}.{op}") for op, operand in value.items()]
        for _ in compares[1:]:
            self._count(where, depth)
        return compares[0] if len(compares) == 1 else All(tuple(compares))

    def _path(self, name: str, where: str) -> tuple[str, ...]:
        limits = self.limits
        if len(name) > limits.max_field_chars:
            raise InvalidMemoryError(where[:80], f"field names are at most {limits.max_field_chars} characters")
        path = tuple(name.split("."))
        if path[0] == "metadata" and len(path) > 1 and all(path[1:]) and len(path) <= limits.max_field_parts + 1:
            return path
        if len(path) == 1 and name in BUILTIN_FIELDS:
            return path
        fields = ", ".join(BUILTIN_FIELDS)
        raise InvalidMemoryError(where, f"unknown field {name!r}: use metadata.KEY (at most {limits.max_field_parts} "
                                        f"dotted parts) or one of {fields}, or and, or, not")

    def _compare(self, path: tuple[str, ...], name: str, operand: object, where: str) -> Compare:
        try:
            op = Op(name)
        except ValueError:
            raise InvalidMemoryError(where, f"unknown operator; use one of {', '.join(o.value for o in Op)}") from None
        if op is Op.IN:
            if not isinstance(operand, list) or not 1 <= len(operand) <= self.limits.max_in:
                raise InvalidMemoryError(where, f"must be a list of 1 to {self.limits.max_in} values")
            for i, item in enumerate(operand):
                self._operand(path, op, item, f"{where}[{i}]")
            return Compare(path, op, scalar_keys(operand))
        self._operand(path, op, operand, where)
        return Compare(path, op, operand)

    def _operand(self, path: tuple[str, ...], op: Op, value: object, where: str) -> None:
        """Refuse a value `op` cannot take, or one a built-in field never holds."""
        if isinstance(value, str) and len(value) > self.limits.max_string:
            raise InvalidMemoryError(where, f"strings are at most {self.limits.max_string} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMemoryError(where, "must be a finite number")
        if op is Op.CONTAINS:
            if not isinstance(value, str) or not value:
                raise InvalidMemoryError(where, "must be a non-empty string")
            self.contains += 1
            if self.contains > self.limits.max_contains:
                raise InvalidMemoryError(where, f"filters have at most {self.limits.max_contains} contains")
        elif op in ORDER_OPS:
            if not (_is_number(value) or isinstance(value, str)):
                raise InvalidMemoryError(where, f"must be a number or a string, got {value!r}")
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            raise InvalidMemoryError(where, f"must be a string, number, boolean or null, got {type(value).__name__}")
        field = path[0]
        if field in NUMERIC_FIELDS and op is not Op.CONTAINS and not _is_number(value):
            raise InvalidMemoryError(where, f"{field} holds numbers (seconds since the epoch for times), got {value!r}")
        if field in NAMED_VALUES and op in (Op.EQ, Op.NE, Op.IN) and value not in NAMED_VALUES[field]:
            allowed = ", ".join(sorted(NAMED_VALUES[field]))
            raise InvalidMemoryError(where, f"{value!r} is not one of {allowed}")

    def _count(self, where: str, depth: int) -> None:
        self.nodes += 1
        if depth > self.limits.max_depth:
            raise InvalidMemoryError(where, f"filters nest at most {self.limits.max_depth} levels deep")
        if self.nodes > self.limits.max_nodes:
            raise InvalidMemoryError(where, f"filters have at most {self.limits.max_nodes} nodes")
