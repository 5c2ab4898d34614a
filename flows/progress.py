"""What a running stream shows on stderr: stage, events/s, training steps and ETA.

One line, redrawn in place (``\\r``) on a terminal; on anything else (a log file, CI, a
pipe) a plain line every ``interval`` seconds while something moved, at least every
``quiet_after`` seconds while nothing does (a long training step, the gate's losses), and at
every change of stage, so a redirected run still says where it is. A small ticker thread
draws them: events reach the display in batches (64 per source batch), so drawing only when
an event arrives would print one stale line per batch. tqdm is not used for this: its
non-terminal output is the same ``\\r``-joined redraw, unreadable in a log.

    edgetune: select 120/300 events, 3.4 ev/s, ETA 53 s
    edgetune: train run 1, step 5/14, 310 tok/s, ETA 31 s (events done: 300 in 88 s)

>>> import io
>>> out, now = io.StringIO(), [0.0]
>>> p = Progress(total=4, stream=out, tty=False, interval=5, clock=lambda: now[0])
>>> now[0] = 20.0; p.stage("select")               # the model took 20 s to load
>>> for t in (22.0, 24.0, 26.0, 28.0):
...     now[0] = t; p.event()
>>> now[0] = 30.0; p.tick()                         # the ticker thread calls this
>>> now[0] = 32.0; p.train_step(1, 3, 200, 4.0)     # 200 tokens in 4 s
>>> now[0] = 38.0; p.tick()                         # nothing moved, quiet_after not reached: no line
>>> now[0] = 40.0; p.close()
>>> print(out.getvalue().strip())
edgetune: select 0/4 events
edgetune: select 4/4 events, 0.4 ev/s, ETA 0 s
edgetune: train run 1, step 1/3, 50 tok/s, ETA 8 s (events done: 4 in 28 s)
edgetune: done: 4 events in 40 s, 1 training run(s)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Counts events and training steps; renders them (see the module docstring).

    Args:
        total: events expected (``None``: unknown, no ETA).
        stream: where lines go (stderr).
        tty: redraw in place; ``None`` asks ``stream.isatty()``.
        interval: seconds between plain lines when not a terminal.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, total: int | None, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 10.0, quiet_after: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 ticker: bool = False):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if not self.tty else 1.0
        self.quiet_after = quiet_after if not self.tty else 1.0
        self.clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._stage = "load"
        self._events = 0
        self._select_start: float | None = None
        self._events_done_at: float | None = None
        self._runs = 0
        self._step: tuple[int, int, int, float] | None = None  # step, total, tokens, seconds
        self._last_draw = float("-inf")
        self._drawn_state: tuple = ()
        self._width = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True) if ticker else None
        if self._ticker is not None:
            self._ticker.start()

    def stage(self, name: str) -> None:
        """Enter stage ``name`` (``"load"``, ``"select"``); always drawn."""
        with self._lock:
            self._stage = name
            if name == "select" and self._select_start is None:
                self._select_start = self.clock()
            self._draw(force=True)

    def event(self) -> None:
        """One event decided or dead-lettered."""
        with self._lock:
            if self._stage == "load":
                self._stage = "select"
            if self._select_start is None:
                self._select_start = self.clock()
            self._events += 1
            if self.total is not None and self._events >= self.total and self._events_done_at is None:
                self._events_done_at = self.clock()

    def train_step(self, step: int, total: int, tokens: int, seconds: float) -> None:
        """A training step ended (``models.train.watch_steps`` calls this)."""
        with self._lock:
            if step == 1:
                self._runs += 1
            first = self._stage != "train"
            self._stage, self._step = "train", (step, total, tokens, seconds)
            self._draw(force=first or step == total)

    def close(self) -> None:
        """Draw the final line (and end the redrawn one)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            elapsed = self.clock() - self._start
            runs = f", {self._runs} training run(s)" if self._runs else ""
            self._emit(f"edgetune: done: {self._events} events in {elapsed:.0f} s{runs}", final=True)

    # --- internals ---------------------------------------------------------------

    def tick(self) -> None:
        """Draw if something moved and ``interval`` passed, or ``quiet_after`` passed (the ticker's call)."""
        with self._lock:
            now = self.clock()
            moved = self._state() != self._drawn_state
            if now - self._last_draw >= (self.interval if moved else self.quiet_after):
                self._draw(force=True)

    def _tick(self) -> None:
        while not self._stop.wait(min(self.interval, self.quiet_after) / 4):
            self.tick()

    def _state(self) -> tuple:
        return (self._stage, self._events, self._step)

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw, self._drawn_state = now, self._state()
        self._emit(self._line(now))

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        if self._stage == "train" and self._step is not None:
            step, total, tokens, seconds = self._step
            speed = tokens / seconds if seconds > 0 else 0.0
            eta = (total - step) * seconds / step if step else 0.0
            done = self._events_done_at if self._events_done_at is not None else now
            return (f"edgetune: train run {self._runs}, step {step}/{total}, {speed:.0f} tok/s, ETA {eta:.0f} s "
                    f"(events done: {self._events} in {done - self._start:.0f} s)")
        if self._stage == "load":
            return f"edgetune: load model ({elapsed:.0f} s)"
        of = f"/{self.total}" if self.total is not None else ""
        line = f"edgetune: {self._stage} {self._events}{of} events"
        selecting = now - (self._select_start if self._select_start is not None else self._start)
        if self._events and selecting > 0:
            rate = self._events / selecting
            line += f", {rate:.1f} ev/s"
            if self.total is not None and rate > 0:
                line += f", ETA {max(self.total - self._events, 0) / rate:.0f} s"
        return line

    def _emit(self, line: str, final: bool = False) -> None:
        if self.tty:
            pad = " " * max(self._width - len(line), 0)
            self._width = len(line)
            self.stream.write("\r" + line + pad + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
