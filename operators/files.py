"""Private, atomic files: how edgetune writes anything that may hold user text.

Modes: files are 0600 and folders 0700, set explicitly at creation (``os.open``
or ``mkstemp``, then ``fchmod``; ``mkdir`` then ``chmod``), so they do not depend
on the process umask: a umask of 000 still gives 0600, and a file that already
existed with a wider mode is narrowed when it is written again.

Durability — one choice for every whole file (buffer snapshots, decision-log
parts, adapter manifests and ``latest`` pointers, training journal entries,
``heldout.jsonl``, ``eval --report``): :func:`atomic_write` writes a temp file in
the target's own folder (a rename across file systems is not atomic), fsyncs it,
renames it over the target and fsyncs the folder. A reader sees the old file or
the new one, never half of one, and once the call returns the new content
survives a power cut. The temp file is removed on any error. A folder (an
adapter version) is built in an :func:`atomic_folder` and published by
:func:`publish_folder` the same way: every file fsynced, one rename, the parent
fsynced (the model cache too, with ``shared=True``: it holds no user text, so its
files keep the modes their writer gave them). The cost is two fsyncs per file, a few milliseconds on flash; no file is
written per event (snapshots at most every ``output.flush_seconds`` per user,
decision parts every ``output.flush_rows`` rows).

The one cheaper choice: the append-only JSONL logs (dead letters, annotation
requests; :func:`open_private_append`) are flushed to the OS after each batch but
not fsynced. Losing their tail in a power cut costs nothing that an fsync would
keep: with a recovery store Bytewax re-emits everything after the last checkpoint
(at-least-once), so those lines are written again; without one the run is not
resumable anyway. A crash can cut their last line short: the readers skip and
report such a torn last line (``flows.outputs``), and the writer completes or cuts
it before appending again, so it never becomes a bad line in the middle.

>>> import os, stat, tempfile
>>> root = private_mkdir(os.path.join(tempfile.mkdtemp(), "out", "buffers"))
>>> oct(stat.S_IMODE(os.stat(root).st_mode))
'0o700'
>>> atomic_write(os.path.join(root, "u.json"), b'{"user_id": "u"}')
>>> oct(stat.S_IMODE(os.stat(os.path.join(root, "u.json")).st_mode)), sorted(os.listdir(root))
('0o600', ['u.json'])
>>> with open_private_append(os.path.join(root, "log.jsonl")) as fh:
...     _ = fh.write(b"{}\\n")
>>> oct(stat.S_IMODE(os.stat(os.path.join(root, "log.jsonl")).st_mode))
'0o600'
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "atomic_folder",
    "atomic_write",
    "fsync_folder",
    "open_private_append",
    "private_mkdir",
    "publish_folder",
    "user_file_name",
]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_mkdir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents as 0700 folders; narrow ``path`` itself to 0700 if it existed.

    Parents that already exist keep their mode (they may be shared folders such as ``/tmp``).
    Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # made meanwhile by another worker
            pass
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"path={str(path)!r} exists and is not a folder; choose another output folder")
    os.chmod(path, FOLDER_MODE)
    return path


def atomic_write(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with ``data``, mode 0600, durably; see the module docstring.

    ``data`` is bytes, or a function that writes the content to the binary handle it
    is given (e.g. ``lambda fh: pyarrow.parquet.write_table(table, fh)``), so a large
    file need not be held in memory twice. The folder must exist.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.txt", lambda fh: fh.write(b"streamed"))
    >>> def fail(fh):
    ...     fh.write(b"half")
    ...     raise OSError("disk full")
    >>> atomic_write(folder / "a.txt", fail)
    Traceback (most recent call last):
    OSError: disk full
    >>> (folder / "a.txt").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'streamed', ['a.txt'])
    """
    path = Path(path)
    if isinstance(data, (bytes, bytearray, memoryview)):
        content = data
        data = lambda fh: fh.write(content)  # noqa: E731
    elif not callable(data):
        raise TypeError(f"atomic_write(data=...) must be bytes or a function of a binary handle, "
                        f"got {type(data).__name__}; encode text first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp already uses 0600; say so rather than rely on it
        with os.fdopen(fd, "wb") as fh:
            data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


@contextmanager
def atomic_folder(parent: str | os.PathLike[str], prefix: str = ".tmp-") -> Iterator[Path]:
    """A private (0700) temp folder inside ``parent`` to build a folder in; removed on exit unless published.

    Readers must ignore names starting with ``prefix`` (a crash can leave one behind).

    >>> import tempfile
    >>> parent = Path(tempfile.mkdtemp())
    >>> with atomic_folder(parent) as tmp:
    ...     _ = (tmp / "weights").write_bytes(b"w")
    ...     publish_folder(tmp, parent / "v1")
    >>> sorted(p.name for p in parent.iterdir()), oct((parent / "v1" / "weights").stat().st_mode & 0o777)
    (['v1'], '0o600')
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mkdtemp makes it 0700
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(staged: Path, final: Path, *, shared: bool = False) -> None:
    """Rename ``staged`` (from :func:`atomic_folder`) to ``final`` durably: a reader sees all of it or none.

    Every file inside is narrowed to 0600 (folders 0700: writers such as peft's
    ``save_pretrained`` follow the umask) and fsynced, then the folder, then the
    rename, then the parent. Raises ``FileExistsError`` if ``final`` exists (a
    concurrent writer took the name): choose another and call again.

    ``shared``: for a folder without user text that other accounts may read (the
    model cache): the entries keep the modes their writer gave them, and ``final``
    gets 0755 rather than the temp folder's 0700. Durability is the same.
    """
    for entry in staged.rglob("*"):
        if entry.is_dir():
            if not shared:
                os.chmod(entry, FOLDER_MODE)
            fsync_folder(entry)
        elif entry.is_file():
            fd = os.open(entry, os.O_RDONLY)
            try:
                if not shared:
                    os.fchmod(fd, FILE_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
    if shared:
        os.chmod(staged, 0o755)
    fsync_folder(staged)
    try:
        os.rename(staged, final)  # never replaces a non-empty folder
    except OSError:
        if final.exists():
            raise FileExistsError(f"{final} exists; publish under another name") from None
        raise
    fsync_folder(final.parent)


def open_private_append(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for appending bytes, creating it 0600 (an existing file is narrowed to 0600).

    For append-only logs, flushed but not fsynced: see the module docstring for why.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PLAIN_ID = re.compile(r"[a-z0-9_-]{1,64}")
# Device names Windows reserves in any case and with any extension ("nul.json" is the null device too).
_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(10))})


def user_file_name(user_id: str, *, opaque: bool = False) -> str:
    """The name a user's file or folder gets (add any suffix): safe on any file system, distinct per id.

    Ids made only of ``[a-z0-9_-]`` (at most 64, not a Windows device name) are
    used as they are. Any other id becomes ``<slug>.<16 hex of its sha256>``: the
    slug (lower case, other characters as ``_``, at most 40) keeps it readable, the
    hash keeps distinct ids apart, also on case-insensitive disks (phones, laptops)
    where "Alice" and "alice" would otherwise share a file. The ``.`` never occurs
    in a plain id, so the two forms never meet. Every name is at most 64 ASCII
    characters of ``[a-z0-9_.-]``: never a path, never ``.`` or ``..``, never
    starting with ``.`` (temp files), never a device name.

    ``opaque`` gives the hash alone, for files whose name must not reveal the id
    (the training journal's entries, named by sequence number and user).

    >>> user_file_name("alice"), user_file_name("Alice")
    ('alice', 'alice.3bc51062973c458d')
    >>> user_file_name("../x"), user_file_name("\\U0001F600"), user_file_name("con"), user_file_name("Con")
    ('___x.d6b96a97d147daaa', '_.f0443a342c5ef547', 'con_.1143da2bc54c495c', 'con_.3b6f52aa7955346f')
    >>> long = user_file_name("u" * 300)
    >>> long == "u" * 40 + "." + long[-16:], len(long)
    (True, 57)
    >>> user_file_name("Alice", opaque=True)
    '3bc51062973c458d'
    """
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"user_id={user_id!r} must be a non-empty string")
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    if opaque:
        return digest
    if _PLAIN_ID.fullmatch(user_id) and user_id not in _RESERVED:
        return user_id
    slug = re.sub(r"[^a-z0-9_-]", "_", user_id.lower())[:40]
    if slug in _RESERVED:
        slug += "_"
    return f"{slug}.{digest}"
