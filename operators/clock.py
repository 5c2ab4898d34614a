"""The window clock: when one user's training windows close, and why.

Two triggers close a window; either may be off (0):

* ``window_events``: every that many accepted events (the paper's protocol), trigger ``events``;
* ``window_ms``: event-time tumbling windows ``[k*window_ms, (k+1)*window_ms)`` since the
  epoch, trigger ``event_time``. The user's own events are the clock: the first event at
  or past the open window's end closes it (before that event is offered, since it belongs
  to the next window), so a quiet user's window stays open until they speak again or the
  input ends. Several empty windows skipped at once close nothing; an event older than the
  open window (late) is still counted but opens nothing.

A window with no event since the last close never closes. The caller asks
:meth:`WindowClock.advance` before offering an event and :meth:`WindowClock.count` after;
each returns the trigger of the window to close (or None), and the caller then hands the
trainer the buffer and calls :meth:`WindowClock.close`.

Windows of 1,000 ms and of 4 events; worked out by hand:

>>> clock = WindowClock(window_events=4, window_ms=1000)
>>> def arrive(ts_ms):
...     why = [clock.advance(ts_ms)]
...     if why[0]: clock.close()
...     why.append(clock.count())
...     if why[1]: clock.close()
...     return why
>>> [arrive(t) for t in (100, 900)]  # window [0, 1000) opens at 100
[[None, None], [None, None]]
>>> arrive(1000)  # crosses 1000 with two new events: closes before it counts
['event_time', None]
>>> arrive(1500)  # the 4th event: a count close
[None, 'events']
>>> arrive(5200), clock.n_windows, clock.window_end_ms  # crosses 2000, but nothing is new since: no close
([None, None], 2, 6000)
>>> WindowClock.from_snapshot(clock.snapshot()).snapshot() == clock.snapshot()
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["WindowClock"]


class WindowClock:
    """Counts a user's accepted events and tracks the open event-time window."""

    def __init__(self, window_events: int = 0, window_ms: int = 0):
        self.window_events = window_events
        self.window_ms = window_ms
        self.n_events = 0  # accepted events so far; the next one's seq
        self.n_windows = 0  # windows closed so far
        self.last_window_events = 0  # n_events when the last window closed
        self.window_end_ms: int | None = None  # end of the open event-time window

    def advance(self, ts_ms: int) -> str | None:
        """Move the clock to an event at ``ts_ms``, before it is offered: ``"event_time"`` if the
        open window must close first (an event past its end, and events since the last close)."""
        if not self.window_ms or (self.window_end_ms is not None and ts_ms < self.window_end_ms):
            return None
        crossed = self.window_end_ms is not None and self.has_new_events()
        self.window_end_ms = (ts_ms // self.window_ms + 1) * self.window_ms
        return "event_time" if crossed else None

    def count(self) -> str | None:
        """Count an accepted event, after it is offered: ``"events"`` if that completes a count window."""
        self.n_events += 1
        return "events" if self.window_events and self.n_events % self.window_events == 0 else None

    def close(self) -> int:
        """A window closes (whatever its trigger); returns its number, from 1."""
        self.n_windows += 1
        self.last_window_events = self.n_events
        return self.n_windows

    def has_new_events(self) -> bool:
        """Whether an event was counted since the last close (else a close would be empty)."""
        return self.n_events > self.last_window_events

    def snapshot(self) -> dict[str, Any]:
        return {
            "n_events": self.n_events,
            "n_windows": self.n_windows,
            "last_window_events": self.last_window_events,
            "window_events": self.window_events,
            "window_ms": self.window_ms,
            "window_end_ms": self.window_end_ms,
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> "WindowClock":
        """Rebuild from ``snapshot()``; snapshots from before event-time windows lack ``window_ms``
        and ``window_end_ms``."""
        clock = cls(snap["window_events"], snap.get("window_ms", 0))
        clock.window_end_ms = snap.get("window_end_ms")
        clock.n_events = snap["n_events"]
        clock.n_windows = snap["n_windows"]
        clock.last_window_events = snap["last_window_events"]
        return clock
