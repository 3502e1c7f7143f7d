"""Search and list filters: which of a tenant's memories a query may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from textual.errors import InvalidMemoryError
from textual.filter_expr import Predicate
from textual.memory import LifecycleTier, Memory, MemoryType, check_identifier, check_time, parse_tier, parse_type

SEARCHED_TIERS = frozenset({LifecycleTier.HOT, LifecycleTier.WARM, LifecycleTier.COLD})


@dataclass(frozen=True)
class Filters:
    """Conjunctive filters; `None` means any. By default archived memories are left out of search and list.

    `tiers_given` records whether the caller named tiers: search then looks in exactly those, while by default it
    searches hot and warm and falls back to cold only when those match weakly. Build one with `Filters.of(...)`,
    which checks every field and raises InvalidMemoryError naming the bad one.

    Scope: `user` and `agent` narrow to the memories about that user and by (or for) that agent, and `shared` adds
    the memories of those spaces whoever wrote them (the spaces the caller's user or agent may read); `run` and
    `space` narrow both. `where` is a parsed filter expression (`textual.filter_expr`) every memory must pass too.
    """

    user: str | None = None
    kb_ids: frozenset[str] | None = None
    types: frozenset[MemoryType] | None = None
    tiers: frozenset[LifecycleTier] = SEARCHED_TIERS
    since: float | None = None
    until: float | None = None
    tiers_given: bool = False
    agent: str | None = None
    run: str | None = None
    space: str | None = None
    shared: frozenset[str] = frozenset()
    where: Predicate | None = None

    @classmethod
    def of(cls, user: str | None = None, kb_id: str | Iterable[str] | None = None, types: Iterable[str] | None = None,
           tiers: Iterable[str] | None = None, since: float | None = None, until: float | None = None,
           agent: str | None = None, run: str | None = None, space: str | None = None,
           where: Predicate | None = None) -> "Filters":
        """Checked filters from plain values (type and tier names as strings or enums; one kb id or a list)."""
        if isinstance(types, str) or isinstance(tiers, str):
            raise InvalidMemoryError("types" if isinstance(types, str) else "tiers", "must be a list of names")
        since = None if since is None else check_time("since", since)
        until = None if until is None else check_time("until", until)
        if since is not None and until is not None and since > until:
            raise InvalidMemoryError("since", f"{since} is after until={until}")
        return cls(
            user=None if user is None else check_identifier("user", user),
            kb_ids=None if kb_id is None else _kb_ids(kb_id),
            types=None if types is None else frozenset(parse_type(value) for value in types),
            tiers=SEARCHED_TIERS if tiers is None else frozenset(parse_tier(value) for value in tiers),
            since=since, until=until, tiers_given=tiers is not None,
            agent=None if agent is None else check_identifier("agent_id", agent),
            run=None if run is None else check_identifier("run_id", run),
            space=None if space is None else check_identifier("space_id", space),
            where=where)

    def is_user_only(self) -> bool:
        """Whether only `user` and `shared` can exclude a searchable (hot, warm or cold) memory: no other filter is
        set."""
        return (self.kb_ids is None and self.types is None and self.since is None and self.until is None
                and self.tiers == SEARCHED_TIERS and self.agent is None and self.run is None and self.space is None
                and self.where is None)

    def in_scope(self, memory: Memory) -> bool:
        """Whether `memory` is the caller's own (its user and agent as named) or in a space it shares, and in the
        named run and space."""
        own = (self.user is None or memory.user == self.user) and (self.agent is None or memory.agent == self.agent)
        return ((own or memory.space in self.shared) and (self.run is None or memory.run == self.run)
                and (self.space is None or memory.space == self.space))

    def matches(self, memory: Memory) -> bool:
        """Whether `memory` passes every filter (time bounds apply to `created_at`, both inclusive)."""
        return (self.in_scope(memory)
                and (self.kb_ids is None or memory.kb_id in self.kb_ids)
                and (self.types is None or memory.type in self.types)
                and memory.tier in self.tiers
                and (self.since is None or memory.created_at >= self.since)
                and (self.until is None or memory.created_at <= self.until)
                and (self.where is None or self.where.matches(memory)))


def _kb_ids(value: str | Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({check_identifier("kb_id", value)})
    ids = frozenset(check_identifier("kb_id", item) for item in value)
    if not ids:
        raise InvalidMemoryError("kb_id", "must name at least one knowledge base")
    return ids
