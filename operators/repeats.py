"""The repeat guard: one user's event ids that arrive again, caught within a bounded memory.

Bytewax delivers at least once and producers retry, so an event can arrive twice. The
guard remembers the user's last ``dedup_window`` event ids (an :class:`~operators.recent.RecentIds`
ring), so its memory and snapshot are flat in the stream's length. An id repeated within
that window, or while its event is still buffered, is a *repeated event*: the caller
dead-letters it with the reason :data:`REPEATED_EVENT`. An older repeat is let through as
a new event. (This is one of three "duplicates": see ``operators.sample.OUTCOMES``.)

>>> guard = RepeatGuard(dedup_window=2)
>>> [guard.admit(i) for i in ("a", "b", "a", "c", "a")]  # "c" pushes "a" out: its next repeat is new
[True, True, False, True, True]
>>> guard.admit("z", buffered=True), "z" in guard  # buffered: a repeat however old, and not remembered
(False, False)
>>> RepeatGuard.from_snapshot(guard.snapshot()).snapshot()
{'seen': {'capacity': 2, 'ids': ['c', 'a']}, 'dedup_window': 2}
"""

from __future__ import annotations

from typing import Any

from operators.recent import RecentIds

__all__ = ["REPEATED_EVENT", "RepeatGuard"]

REPEATED_EVENT = "duplicate_event"
"""Dead-letter reason of a repeated event id (the value predates the name, and stays)."""


class RepeatGuard:
    """Says whether an arriving event id is new, and remembers the last ``dedup_window`` new ones."""

    def __init__(self, dedup_window: int = 4096):
        self.dedup_window = dedup_window
        self.recent = RecentIds(dedup_window)  # validates dedup_window, naming the setting

    def admit(self, event_id: str, buffered: bool = False) -> bool:
        """True for a new id, which is remembered (the oldest leaves once ``dedup_window`` are held);
        False, changing nothing, for a repeat: among the recent ids, or ``buffered`` by the caller."""
        if buffered or event_id in self.recent:
            return False
        self.recent.add(event_id)
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.recent

    def __len__(self) -> int:
        return len(self.recent)

    def snapshot(self) -> dict[str, Any]:
        return {"seen": self.recent.snapshot(), "dedup_window": self.dedup_window}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "RepeatGuard":
        """Rebuild from ``snapshot()``; older snapshots lack ``dedup_window`` and may hold every id
        ever seen as a sorted list, of which the last ``dedup_window`` are kept."""
        guard = cls(snap.get("dedup_window", 4096))
        guard.recent = RecentIds.from_snapshot(snap["seen"], guard.dedup_window)
        return guard
