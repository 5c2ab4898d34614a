"""Training requests handed to the trainer and not yet finished, kept on disk until their run ends.

A window's training request leaves the per-user state when the window closes. If the
process stops while the request waits in the trainer's queue or while it trains, Bytewax
recovery resumes the stream *after* that window, so without a journal the run is lost
until the user's next window closes (800 events later by default, which can be days for
a quiet user). The trainer therefore writes each request here before queueing it and
deletes it once its run has trained or been skipped; on start it runs what it finds.

As in the trainer's queue, the newest request per user wins: a later request carries the
user's later buffer, which supersedes the earlier one. Files are named
``<seq>-<user hash>.json`` (``operators.files.user_file_name(user, opaque=True)``) so
that the arrival order survives a restart and no user id ever reaches a file name. Each
is written with ``operators.files.atomic_write``, so a crash leaves a whole request or
none. The files hold conversation text, so they are 0600 in a 0700 folder. A run that
fails stays here with its ``attempts`` and ``last_error`` (``fail``), so the trainer can
retry it a bounded number of times and ``edgetune adapters list`` can show it.

>>> import tempfile
>>> journal = PendingRuns(tempfile.mkdtemp())
>>> a = journal.put({"user_id": "alice", "window": 1, "samples": []})
>>> b = journal.put({"user_id": "bob", "window": 1, "samples": []})
>>> c = journal.put({"user_id": "alice", "window": 2, "samples": []})
>>> journal.done(b)
>>> [(r["user_id"], r["window"]) for _, r in PendingRuns(journal.root).load()]  # after a restart
[('alice', 2)]
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from operators.files import atomic_write, private_mkdir, user_file_name

_NAME = re.compile(r"(\d{12})-([0-9a-f]{16})\.json")


class PendingRuns:
    """A directory of journaled training requests: ``put`` before queueing, ``done`` after the run."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._seq: int | None = None  # next sequence number, read from disk on first use

    def put(self, request: dict[str, Any]) -> str:
        """Journal ``request`` (it must carry ``user_id``); returns its key for ``done``."""
        user = request.get("user_id")
        if not isinstance(user, str) or not user:
            raise ValueError(f"a training request needs a non-empty string user_id, got {user!r}")
        text = json.dumps(request, sort_keys=True)  # fails here, not at restart, if it is not JSON data
        with self._lock:
            private_mkdir(self.root)  # the requests hold the samples' text: 0700, files 0600
            if self._seq is None:
                self._seq = max((seq for seq, _ in self._entries()), default=0) + 1
            key = f"{self._seq:012d}-{user_file_name(user, opaque=True)}.json"
            self._seq += 1
            atomic_write(self.root / key, text.encode())
        return key

    def done(self, key: str) -> None:
        """The run of ``key`` has ended (trained or skipped), or was superseded: forget it."""
        (self._path(key)).unlink(missing_ok=True)

    def fail(self, key: str, reason: str) -> dict[str, Any] | None:
        """The run of ``key`` failed: keep it, with ``attempts`` counted up and ``last_error`` set.

        Returns the updated request, or None when the entry is gone (superseded meanwhile).
        The count survives restarts, so a run that fails on its data is not retried forever.

        >>> import tempfile
        >>> journal = PendingRuns(tempfile.mkdtemp())
        >>> key = journal.put({"user_id": "alice", "window": 1, "samples": []})
        >>> journal.fail(key, "RuntimeError: out of memory")["attempts"]
        1
        >>> [(r["attempts"], r["last_error"]) for r in journal.pending()]
        [(1, 'RuntimeError: out of memory')]
        """
        path = self._path(key)
        with self._lock:
            try:
                request = json.loads(path.read_text())
            except FileNotFoundError:
                return None
            request["attempts"] = int(request.get("attempts", 0)) + 1
            request["last_error"] = str(reason)
            atomic_write(path, json.dumps(request, sort_keys=True).encode())
        return request

    def load(self) -> list[tuple[str, dict[str, Any]]]:
        """``(key, request)`` left by an earlier process, the newest per user, oldest first.

        Older requests of the same user are deleted: the newest supersedes them. A file that
        does not parse (it cannot be half-written, so it was edited by hand) is renamed to
        ``<name>.bad`` and skipped, so one bad file does not block every start.
        """
        with self._lock:
            newest, superseded, bad = self._scan()
            for path in superseded:
                path.unlink(missing_ok=True)
            for path in bad:
                path.rename(path.with_name(path.name + ".bad"))
        return newest

    def pending(self) -> list[dict[str, Any]]:
        """The requests ``load`` would return, without changing anything on disk (for listings)."""
        with self._lock:
            return [request for _, request in self._scan()[0]]

    def _path(self, key: str) -> Path:
        if not _NAME.fullmatch(key):
            raise ValueError(f"{key!r} is not a key returned by PendingRuns.put")
        return self.root / key

    def _scan(self) -> tuple[list[tuple[str, dict[str, Any]]], list[Path], list[Path]]:
        newest: dict[str, tuple[int, Path, dict[str, Any]]] = {}
        superseded, bad = [], []
        for seq, path in self._entries():
            try:
                request = json.loads(path.read_text())
                user = request["user_id"]
            except (OSError, ValueError, KeyError, TypeError):
                bad.append(path)
                continue
            if user in newest:
                superseded.append(newest[user][1])
            newest[user] = (seq, path, request)
        ordered = sorted(newest.values(), key=lambda entry: entry[0])
        return [(path.name, request) for _, path, request in ordered], superseded, bad

    def _entries(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _NAME.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)
