"""Graceful stop: SIGINT or SIGTERM ends the stream as if its input had ended, minus the training.

A handler only sets a flag, so no exception is raised inside Bytewax (which
turned KeyboardInterrupt into a Rust panic). Sources check the flag before
each batch and end their partitions; the batch in flight goes through every
step, the sinks flush and close (decision log, buffer snapshots), Bytewax
writes its last checkpoint, the trainer finishes the run in progress and leaves
the queued requests journaled (:meth:`flows.trainer.TrainingService.stop`), and the
CLI prints the summary and exits with :data:`EXIT_STOPPED`. The per-user step tells a stop from a real end of input
with :func:`stopping`: it writes the buffer snapshot but closes no training
window, so a restart continues exactly where an uninterrupted run would be.
A second signal restores the default handler, so a third one kills at once.

>>> reset(); stopping()
False
>>> request_stop(); stopping()
True
>>> reset()
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Optional

__all__ = ["EXIT_STOPPED", "install_handlers", "request_stop", "reset", "stopping"]

EXIT_STOPPED = 3
"""Exit code of ``edgetune run`` / ``replay`` stopped by SIGINT or SIGTERM after a clean flush."""

_STOP = threading.Event()
_signals: list[int] = []
log = logging.getLogger(__name__)


def stopping() -> bool:
    """Whether a stop was requested in this process."""
    return _STOP.is_set()


def request_stop(signum: Optional[int] = None) -> None:
    """Ask every source of this process to end after its current batch."""
    if signum is not None:
        _signals.append(signum)
    _STOP.set()


def reset() -> None:
    """Forget a stop request (tests, or a second run in one process)."""
    _STOP.clear()
    _signals.clear()


def install_handlers() -> None:
    """Route SIGINT and SIGTERM to :func:`request_stop` (main thread only)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _on_signal(signum: int, _frame: Optional[FrameType]) -> None:
    if _STOP.is_set():
        # Asked twice: let the next one act as the default would (SIGINT: KeyboardInterrupt, SIGTERM: exit).
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
        log.warning("stop already requested; another %s ends the process at once", signal.Signals(signum).name)
        return
    log.info("%s received: finishing the current batch, then flushing and stopping", signal.Signals(signum).name)
    request_stop(signum)
