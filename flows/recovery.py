"""One user out of Bytewax's recovery store, which stays usable for the next run.

The store (``--recovery-dir``) is a folder of SQLite files (``part-<N>.sqlite3``, WAL mode).
Their ``snaps`` table holds one row per ``(step_id, state_key, snap_epoch)`` with the
pickled snapshot in ``ser_change`` (NULL: the key's state was discarded). Two of edgetune's
steps keep a user's data there:

- the per-user selection step: rows keyed by the user id, whose snapshot is a
  ``UserState.snapshot()`` dict (``user_id``, ``policy_name``, buffered texts). Those rows
  are deleted, every epoch of them: on resume Bytewax then finds no state for the key, so
  the user's next event starts a fresh state, as for a user never seen;
- the decision log's sink (``{"pending": [rows], "next_part": N}``): the user's rows are
  taken out of ``pending`` in every epoch, the rest is kept as it was.

Steps are recognised by what their snapshots hold, not by their names, so the replay and
Kafka flows are both covered. Deleted rows are overwritten (``secure_delete``), the WAL
is checkpointed into the file and the file is vacuumed, so no page of the file keeps a
copy of what was deleted. The files stay 0600.

>>> import tempfile; from pathlib import Path
>>> forget_in_store(Path(tempfile.mkdtemp()), "ann")  # no store: nothing to do
StoreForgotten(snapshots=0, decision_rows=0, files=0)
"""

from __future__ import annotations

import pickle
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.files import FILE_MODE

__all__ = ["StoreForgotten", "forget_in_store"]


@dataclass
class StoreForgotten:
    """What was taken out of a recovery store: user-state snapshot rows, pending decision rows, files changed."""

    snapshots: int = 0
    decision_rows: int = 0
    files: int = 0


def forget_in_store(folder: Path, user: str) -> StoreForgotten:
    """Delete ``user``'s state snapshots and pending decision rows from every store file in ``folder``."""
    done = StoreForgotten()
    for db in sorted(Path(folder).glob("*.sqlite3")):
        snapshots, rows = _forget_in_file(db, user)
        if snapshots or rows:
            done.snapshots += snapshots
            done.decision_rows += rows
            done.files += 1
        for path in Path(folder).glob(db.name + "*"):  # the file, and any -wal / -shm SQLite left
            path.chmod(FILE_MODE)
    return done


def _forget_in_file(db: Path, user: str) -> tuple[int, int]:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA secure_delete = ON")  # deleted content is zeroed, not left in free pages
        user_steps: set[str] = set()
        rewrites: list[tuple[bytes, str, str, int]] = []
        removed_rows = 0
        for step, key, epoch, blob in con.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps"):
            snap = _load(blob)
            if _is_user_state(snap):
                user_steps.add(step)
            elif _is_decision_log(snap):
                kept = [r for r in snap["pending"] if not (isinstance(r, dict) and r.get("user_id") == user)]
                if len(kept) != len(snap["pending"]):
                    removed_rows += len(snap["pending"]) - len(kept)
                    rewrites.append((pickle.dumps({**snap, "pending": kept}), step, key, epoch))
        con.execute("BEGIN IMMEDIATE")  # fails at once if a run holds the write lock
        deleted = 0
        for step in sorted(user_steps):
            deleted += con.execute("DELETE FROM snaps WHERE step_id = ? AND state_key = ?", (step, user)).rowcount
        con.executemany("UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ? AND snap_epoch = ?",
                        rewrites)
        con.execute("COMMIT")
        if deleted or rewrites:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL held the old pages too
            con.execute("VACUUM")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted, removed_rows
    finally:
        con.close()


def _load(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        return pickle.loads(blob)  # the store's own snapshots, which Bytewax unpickles on every resume
    except Exception:  # a snapshot of a class this process cannot import: not one of ours
        return None


def _is_user_state(snap: Any) -> bool:
    return isinstance(snap, dict) and "policy_name" in snap and isinstance(snap.get("user_id"), str) and "texts" in snap


def _is_decision_log(snap: Any) -> bool:
    return isinstance(snap, dict) and set(snap) == {"pending", "next_part"} and isinstance(snap["pending"], list)
