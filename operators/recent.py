"""A bounded memory of the most recent ids: the per-user repeat guard.

Bytewax delivers at least once, and producers retry, so the same event can arrive
twice. Remembering every id ever seen catches every repeat but grows without bound
(2 MiB and 133 ms per user snapshot after 100k events). ``RecentIds`` keeps the last
``capacity`` ids instead, in a ring (a deque for the order, a set for lookups), so its
size and its snapshot are flat in the stream's length. The guarantee: an id repeated
within ``capacity`` ids of its first arrival is caught; an older repeat is not.

>>> recent = RecentIds(capacity=2)
>>> [recent.add(i) for i in ("a", "b", "a", "c")]  # True: new, False: a repeat
[True, True, False, True]
>>> "a" in recent, "b" in recent, "c" in recent  # "a" fell out when "c" arrived
(False, True, True)
>>> RecentIds.from_snapshot(recent.snapshot()).snapshot()
{'capacity': 2, 'ids': ['b', 'c']}
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Iterator

__all__ = ["RecentIds"]


class RecentIds:
    """The last ``capacity`` distinct ids added, oldest first; ``add`` says whether an id is new."""

    def __init__(self, capacity: int = 4096):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"RecentIds(capacity={capacity!r}) must be an int >= 1 (setting buffer.dedup_window)")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[str]:
        """The ids held, oldest first."""
        return iter(self._order)

    def add(self, item: str) -> bool:
        """Remember ``item``; False (and nothing changes) if it is already among the recent ids."""
        if item in self._members:
            return False
        if len(self._order) >= self.capacity:
            self._members.discard(self._order.popleft())
        self._order.append(item)
        self._members.add(item)
        return True

    def snapshot(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "ids": list(self._order)}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any] | Iterable[str], capacity: int | None = None) -> "RecentIds":
        """Rebuild from ``snapshot()``, or from a plain list of ids (an older, unbounded snapshot).

        ``capacity`` overrides the snapshot's (the setting may have changed); when it is
        smaller, the oldest ids go.
        """
        if isinstance(snap, dict):
            ids, saved = snap["ids"], snap["capacity"]
        else:
            ids, saved = list(snap), None
        recent = cls(capacity or saved or 4096)
        for item in ids:
            recent.add(item)
        return recent
