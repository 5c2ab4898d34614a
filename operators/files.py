"""Private files: everything edgetune writes that may hold user text is 0600, its folders 0700.

The modes are set explicitly at creation (``os.open`` with a mode, then
``fchmod``; ``mkdir`` then ``chmod``), so they do not depend on the process
umask: a umask of 000 still gives 0600, and a file that already existed with
a wider mode is narrowed when it is opened again.

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

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["FILE_MODE", "FOLDER_MODE", "atomic_write", "open_private_append", "private_mkdir"]

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


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new one, never half, mode 0600.

    The temp file lives in the same folder (a rename across file systems is not
    atomic) and is removed if anything fails. ``durable`` fsyncs the file and then
    the folder, so the new content survives a power cut once this returns.
    """
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write(data=...) must be bytes, got {type(data).__name__}; encode text first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp already uses 0600; say so rather than rely on it
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_folder(path.parent)


def open_private_append(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for appending bytes, creating it 0600 (an existing file is narrowed to 0600)."""
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
