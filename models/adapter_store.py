"""Per-user LoRA adapter versions on disk, and the promotion gate.

Layout::

    <root>/<user dir>/v1/adapter_model.safetensors   # peft save_pretrained files
                        /adapter_config.json
                        /manifest.json                 # Manifest (with the sha256 of the weights), written before the rename
    <root>/<user dir>/v2/...
    <root>/<user dir>/latest                          # "2\\n"; absent ⇒ the base model
    <root>/<user dir>/.tmp-...                        # a save in progress (or a crashed one)

``<user dir>`` is ``operators.files.user_file_name(user)``: the id itself when it is
plain lower case, else a slug and a hash, so "Alice" and "alice" get different folders
also on a case-insensitive disk. (Stores written before device names were hashed keep
a plain ``con``/``nul``/… folder; it is still read, see ``AdapterStore._user_dir``.)

A version is written completely into a ``.tmp-`` directory inside the user's folder,
flushed to disk, and then renamed to ``v<N>`` — one atomic step, so a reader sees a
whole version or none (``operators.files.atomic_folder`` / ``publish_folder``).
Readers only look at ``v<N>`` directories that hold a ``manifest.json``; temp
directories left by a crash are ignored. Manifest updates (status) and the ``latest``
pointer are rewritten with ``operators.files.atomic_write``.

A new version starts as a ``"candidate"``. ``promote`` makes it the user's
``latest``; ``reject`` keeps it on disk with the reason; ``rollback`` moves
``latest`` back to the previous promoted version (or to the base model) and marks
the abandoned one ``"rolled_back"``. Nothing is ever deleted: a manifest is the
audit trail of what a user's model was trained on.

>>> promotion_gate(candidate_probe_loss=2.10, current_probe_loss=2.25)
(True, 'candidate probe loss 2.1000 <= current 2.2500 + tolerance 0.0000')
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from models.adapter_manifest import (MANIFEST, WEIGHTS, AdapterIntegrityError, Manifest, Status, read_manifest,
                                     verify_adapter_files, weights_sha256, write_manifest)
from operators.files import atomic_folder, atomic_write, fsync_folder, private_mkdir, publish_folder, user_file_name

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["AdapterStore", "LATEST", "promotion_gate"]

LATEST = "latest"
_TMP_PREFIX = ".tmp-"
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")
_OLD_PLAIN = re.compile(r"[a-z0-9_-]{1,64}")  # ids the first layout used as folder names unchanged


def promotion_gate(
    candidate_probe_loss: float, current_probe_loss: float, tolerance: float = 0.0
) -> tuple[bool, str]:
    """Promote iff the candidate is not worse than the current version on the user's probe.

    Both losses are mean answer losses (``models.train.mean_loss``) on the user's
    held-out probe: samples carved from the user's own annotated samples and never
    trained on. ``current`` is the user's ``latest`` version, or the base model.
    ``tolerance`` (>= 0) accepts a candidate that is worse by at most that much.

    Why loss and not ROUGE-1 (the paper's metric, used by ``edgetune eval``): the
    gate runs after every training window, on a probe of a handful of samples.
    Loss is one teacher-forced forward pass per sample (ROUGE needs generation, one
    pass per new token — tens of times more), deterministic (no sampling, no
    decoding choices), and continuous: on 4-8 probe samples ROUGE-1 moves in coarse
    steps and is dominated by noise, while the per-token loss averages over every
    answer token. It is also what training optimises, measured on unseen samples,
    so it is a direct test of "did this run generalise to this user". A candidate
    with a NaN/inf loss is always rejected.

    >>> promotion_gate(2.3, 2.25)
    (False, 'candidate probe loss 2.3000 > current 2.2500 + tolerance 0.0000')
    >>> promotion_gate(2.3, 2.25, tolerance=0.1)[0]
    True
    """
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"promotion_gate(tolerance={tolerance!r}) must be a finite number >= 0")
    if not math.isfinite(candidate_probe_loss):
        return False, f"candidate probe loss is {candidate_probe_loss}"
    if not math.isfinite(current_probe_loss):  # nothing sane to compare against: any finite loss is better
        return True, f"candidate probe loss {candidate_probe_loss:.4f}, current is {current_probe_loss}"
    ok = candidate_probe_loss <= current_probe_loss + tolerance
    sign = "<=" if ok else ">"
    return ok, (
        f"candidate probe loss {candidate_probe_loss:.4f} {sign} current {current_probe_loss:.4f} "
        f"+ tolerance {tolerance:.4f}"
    )


# One lock per store root for the whole process, so two AdapterStore objects on the
# same directory also serialise their read-modify-write steps.
_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(root: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(root, threading.RLock())


class AdapterStore:
    """Versioned per-user adapters under ``root``; see the module docstring.

    Thread-safe within a process (one lock per root). Across processes, ``save``
    stays safe — renaming onto an existing version fails and the save retries
    with the next number — but status updates are last-writer-wins.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    # --- writing ---------------------------------------------------------------

    def save(self, user: str, peft_model: PeftModel, manifest: Manifest) -> int:
        """Write ``peft_model``'s adapter as the user's next version, a ``"candidate"``.

        The version number, ``created_at`` and status in ``manifest`` are filled in
        here; ``manifest.user_id`` must equal ``user``. Returns the new version.
        """
        if manifest.user_id != user:
            raise ValueError(f"manifest.user_id={manifest.user_id!r} does not match user={user!r}")
        user_dir = self._user_dir(user)
        with _lock_for(self._key()):
            private_mkdir(user_dir)  # adapters encode what the user said: 0700 folders, 0600 files
            with atomic_folder(user_dir, prefix=_TMP_PREFIX) as tmp:
                peft_model.save_pretrained(str(tmp), safe_serialization=True)
                digests = weights_sha256(tmp)
                if WEIGHTS not in digests:
                    raise AdapterIntegrityError(f"save_pretrained wrote no {WEIGHTS} into {tmp}; cannot version it")
                created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
                while True:
                    version = max(self._version_numbers(user_dir), default=0) + 1
                    final = replace(
                        manifest, version=version, created_at=created_at, status="candidate", status_reason="",
                        weights_sha256=digests,
                    )
                    write_manifest(tmp / MANIFEST, final.to_dict())
                    try:
                        # The version appears complete or not at all. Fails if another
                        # process took this number first; then take the next one.
                        publish_folder(tmp, user_dir / f"v{version}")
                    except FileExistsError:
                        continue
                    return version

    def promote(self, user: str, version: int) -> None:
        """Make ``version`` the user's ``latest`` and mark it ``"promoted"``.

        A ``"rejected"`` version cannot be promoted: the gate said no. A
        ``"rolled_back"`` one can (undoing a rollback).
        """
        with _lock_for(self._key()):
            manifest = self._manifest(user, version)
            if manifest.status == "rejected":
                raise ValueError(
                    f"user {user!r} v{version} was rejected ({manifest.status_reason}); "
                    "a rejected version never becomes latest — train a new version"
                )
            self._set_status(user, manifest, "promoted", "")
            self._set_latest(user, version)

    def reject(self, user: str, version: int, reason: str) -> None:
        """Keep ``version`` on disk as ``"rejected"`` with ``reason``; ``latest`` is untouched."""
        with _lock_for(self._key()):
            manifest = self._manifest(user, version)
            if self.latest(user) == version:
                raise ValueError(f"user {user!r} v{version} is the latest version; use rollback to withdraw it")
            self._set_status(user, manifest, "rejected", reason)

    def rollback(self, user: str) -> int | None:
        """Withdraw the user's ``latest``: it becomes ``"rolled_back"``, and ``latest``
        moves to the highest older ``"promoted"`` version, or to the base model
        (returns ``None``). Raises if the user has no ``latest`` to withdraw."""
        with _lock_for(self._key()):
            current = self.latest(user)
            if current is None:
                raise ValueError(
                    f"user {user!r} has no latest adapter (already on the base model); nothing to roll back"
                )
            previous = [
                m.version for m in self.list(user) if m.version < current and m.status == "promoted"
            ]
            target = max(previous, default=None)
            self._set_status(user, self._manifest(user, current), "rolled_back", f"rolled back to {_name(target)}")
            self._set_latest(user, target)
            return target

    # --- reading ---------------------------------------------------------------

    def list(self, user: str) -> list[Manifest]:
        """The user's complete versions, oldest first."""
        user_dir = self._user_dir(user)
        return [self._manifest(user, v) for v in sorted(self._version_numbers(user_dir, complete=True))]

    def latest(self, user: str) -> int | None:
        """The user's promoted version in use, or ``None`` for the base model."""
        pointer = self._user_dir(user) / LATEST
        try:
            text = pointer.read_text().strip()
        except FileNotFoundError:
            return None
        if not text.isdigit() or not (self._user_dir(user) / f"v{text}" / MANIFEST).is_file():
            raise ValueError(f"{pointer} holds {text!r}, not a complete version; fix or delete the file")
        return int(text)

    def integrity(self, user: str, version: int) -> str:
        """``"ok"``, ``"unverified"`` (no digest recorded) or why the version would be refused at load.

        For listings; reads and hashes the weights (a few MB per version).
        """
        path = self.path(user, version)
        try:
            manifest = verify_adapter_files(path)
        except AdapterIntegrityError as err:
            return f"REFUSED: {err}"
        return "ok" if manifest is not None and manifest.weights_sha256 else "unverified"

    def path(self, user: str, version: int) -> Path:
        """Directory of a complete version (what ``load_adapter`` takes)."""
        self._manifest(user, version)  # raises if absent or incomplete
        return self._user_dir(user) / f"v{version}"

    def users(self) -> list[str]:
        """User ids (as given, not folder names) with at least one complete version, sorted."""
        if not self.root.is_dir():
            return []
        found = set()
        for user_dir in self.root.iterdir():
            if not user_dir.is_dir() or user_dir.name.startswith("."):
                continue
            versions = self._version_numbers(user_dir, complete=True)
            if versions:
                found.add(read_manifest(user_dir / f"v{max(versions)}" / MANIFEST).user_id)
        return sorted(found)

    # --- internals -------------------------------------------------------------

    def _key(self) -> Path:
        return self.root.resolve()

    def _user_dir(self, user: str) -> Path:
        folder = self.root / user_file_name(user)
        # Stores written before Windows device names were hashed hold "con", "nul", … under their own
        # name (every other id is named as it was): keep using such a folder where it exists.
        if folder.name != user and _OLD_PLAIN.fullmatch(user) and not folder.exists() and (self.root / user).is_dir():
            return self.root / user
        return folder

    @staticmethod
    def _version_numbers(user_dir: Path, complete: bool = False) -> list[int]:
        """Numbers of the ``v<N>`` dirs; with ``complete``, only those holding a manifest.

        Without ``complete`` every ``v<N>`` counts, so a new version never reuses the
        number of an incomplete one.
        """
        if not user_dir.is_dir():
            return []
        out = []
        for entry in user_dir.iterdir():
            match = _VERSION_DIR.fullmatch(entry.name)
            if match and entry.is_dir() and (not complete or (entry / MANIFEST).is_file()):
                out.append(int(match.group(1)))
        return out

    def _manifest(self, user: str, version: int) -> Manifest:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"version={version!r} must be an int >= 1")
        path = self._user_dir(user) / f"v{version}" / MANIFEST
        if not path.is_file():
            raise ValueError(f"user {user!r} has no complete version v{version} (see `edgetune adapters list`)")
        manifest = read_manifest(path)
        if manifest.user_id != user:
            raise ValueError(f"{path} belongs to user {manifest.user_id!r}, not {user!r}")
        return manifest

    def _set_status(self, user: str, manifest: Manifest, status: Status, reason: str) -> None:
        if status not in get_args(Status):
            raise ValueError(f"status={status!r} must be one of {get_args(Status)}")
        updated = replace(manifest, status=status, status_reason=reason)
        write_manifest(self._user_dir(user) / f"v{manifest.version}" / MANIFEST, updated.to_dict())

    def _set_latest(self, user: str, version: int | None) -> None:
        user_dir = self._user_dir(user)
        pointer = user_dir / LATEST
        if version is None:
            pointer.unlink(missing_ok=True)  # absent pointer = base model
            fsync_folder(user_dir)
        else:
            atomic_write(pointer, f"{version}\n".encode())


def _name(version: int | None) -> str:
    return "the base model" if version is None else f"v{version}"
