"""A round-robin queue over owners (tenants): work items queued per owner, taken one owner at a time in turn.

Invariant: between two items taken from one owner, every other owner that had items waiting at the first of them
gets one taken, so an owner that queues a thousand items delays another owner's next item by at most one item per
owner. Within an owner, items are taken in the order they were put. Not thread-safe: callers hold their own lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FairQueue(Generic[Item]):
    """Items per owner; `pop` takes the next owner's oldest item and moves that owner to the back of the turn."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Item]] = OrderedDict()  # owners with items, in turn order

    def put(self, owner: str, item: Item) -> None:
        self._queues.setdefault(owner, deque()).append(item)

    def pop(self) -> Item | None:
        """The next item in turn, or None when the queue is empty."""
        if not self._queues:
            return None
        owner, items = next(iter(self._queues.items()))
        item = items.popleft()
        if items:
            self._queues.move_to_end(owner)
        else:
            del self._queues[owner]
        return item

    def __len__(self) -> int:
        return sum(len(items) for items in self._queues.values())

    def owners(self) -> list[str]:
        """Owners with items waiting, in the order their turns come."""
        return list(self._queues)
