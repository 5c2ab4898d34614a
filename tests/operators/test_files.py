"""operators.files on real files, under a umask that would leave everything world-readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import operators.files as files
from operators.files import atomic_folder, atomic_write, open_private_append, private_mkdir, publish_folder, user_file_name


@pytest.fixture
def open_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fsyncs(monkeypatch) -> list[str]:
    """What ``os.fsync`` is called on, in order: "file" or "folder" (the calls still sync)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    return synced


def test_private_mkdir_makes_every_missing_parent_0700(tmp_path: Path, open_umask) -> None:
    leaf = private_mkdir(tmp_path / "a" / "b" / "c")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", leaf)] == [0o700] * 3


def test_private_mkdir_narrows_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o777)
    os.chmod(tmp_path / "open", 0o777)
    assert mode(private_mkdir(tmp_path / "open")) == 0o700


def test_private_mkdir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        private_mkdir(tmp_path / "f")


def test_atomic_write_is_0600_and_replaces_whole(tmp_path: Path, open_umask) -> None:
    target = tmp_path / "buf.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o600
    atomic_write(target, b"newer")
    assert target.read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf.json"]


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        atomic_write(tmp_path / "x", "text")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_open_private_append_appends_and_narrows(tmp_path: Path, open_umask) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_bytes(b"1\n")
    os.chmod(path, 0o666)
    with open_private_append(path) as fh:
        fh.write(b"2\n")
    assert path.read_bytes() == b"1\n2\n" and mode(path) == 0o600


def test_atomic_write_streams_from_a_function(tmp_path: Path, open_umask) -> None:
    atomic_write(tmp_path / "part", lambda fh: [fh.write(b"a"), fh.write(b"b")])
    assert (tmp_path / "part").read_bytes() == b"ab" and mode(tmp_path / "part") == 0o600


def _half_then(error: BaseException):
    def write(fh):
        fh.write(b"half a file")
        fh.flush()
        raise error
    return write


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_write_failing_midway_leaves_the_old_file_and_no_temp_file(tmp_path: Path, error) -> None:
    target = tmp_path / "buf.json"
    atomic_write(target, b"old")
    with pytest.raises(type(error)):
        atomic_write(target, _half_then(error))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf.json"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_failing_fsync_or_rename_leaves_no_temp_file(tmp_path: Path, monkeypatch, step) -> None:
    def broken(*args, **kwargs):
        raise OSError(f"{step} failed")

    monkeypatch.setattr(files.os, step, broken)
    with pytest.raises(OSError, match=f"{step} failed"):
        atomic_write(tmp_path / "x.json", b"new")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_fsyncs_the_file_then_the_folder(tmp_path: Path, fsyncs) -> None:
    atomic_write(tmp_path / "x", b"1")
    assert fsyncs == ["file", "folder"]


def test_a_published_folder_is_private_whole_and_its_temp_is_gone(tmp_path: Path, open_umask) -> None:
    with atomic_folder(tmp_path) as staged:
        (staged / "sub").mkdir()
        (staged / "sub" / "weights").write_bytes(b"w")  # written under umask 0: 0666 / 0777
        (staged / "manifest.json").write_text("{}")
        publish_folder(staged, tmp_path / "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]
    assert [mode(p) for p in (tmp_path / "v1", tmp_path / "v1" / "sub")] == [0o700, 0o700]
    assert [mode(p) for p in (tmp_path / "v1" / "manifest.json", tmp_path / "v1" / "sub" / "weights")] == [0o600] * 2


def test_a_shared_folder_keeps_its_writers_modes_and_is_fsynced_all_the_same(tmp_path: Path, fsyncs) -> None:
    with atomic_folder(tmp_path, prefix=".model-") as staged:
        (staged / "config.json").write_text("{}")
        os.chmod(staged / "config.json", 0o644)
        publish_folder(staged, tmp_path / "model", shared=True)
    # The file, the staged folder, then the parent after the rename.
    assert fsyncs == ["file", "folder", "folder"]
    assert [mode(tmp_path / "model"), mode(tmp_path / "model" / "config.json")] == [0o755, 0o644]


def test_publish_never_replaces_an_existing_folder_and_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "theirs").write_text("x")
    with atomic_folder(tmp_path) as staged:
        (staged / "ours").write_text("y")
        with pytest.raises(FileExistsError, match="publish under another name"):
            publish_folder(staged, tmp_path / "v1")
        publish_folder(staged, tmp_path / "v2")  # the retry under the next name
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1", "v2"]
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path) as staged:
            (staged / "half").write_text("z")
            raise RuntimeError("save failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1", "v2"]


# --- user file names ----------------------------------------------------------------------

UNSAFE_IDS = [
    *["../evil", "../../etc/passwd", "a/b", "a\\b", "..", ".", ".hidden"],
    *["Alice", "alice ", "x" * 300, "ü", "a\x00b"],
    *["con", "NUL", "Com1", "lpt9", "aux.txt", "\U0001F600", "\ud800"],
]


@pytest.mark.parametrize("user", UNSAFE_IDS)
def test_unsafe_user_ids_become_safe_folder_names(user):
    name = user_file_name(user)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in {".", ".."} and not name.startswith(".")
    assert len(name.encode()) <= 64
    assert name.isascii() and name.split(".")[0] not in {"con", "nul", "com1", "lpt9", "aux"}


def test_distinct_user_ids_never_share_a_folder():
    ids = ["alice", *UNSAFE_IDS, "a_b", "a/b.", "x" * 301, "ALICE", "Con", "nul_"]
    names = [user_file_name(user) for user in ids]
    assert len(set(names)) == len(ids)
    # also on a case-insensitive file system
    assert len({name.lower() for name in names}) == len(ids)


def test_plain_ids_keep_their_name_so_existing_folders_are_found():
    assert [user_file_name(u) for u in ("alice", "user-0", "a_b", "x" * 64)] == ["alice", "user-0", "a_b", "x" * 64]
    assert user_file_name("x" * 65) != "x" * 65


def test_opaque_names_hide_the_id():
    assert user_file_name("../../etc/passwd", opaque=True).isalnum()
    assert user_file_name("Alice", opaque=True) == user_file_name("Alice").split(".")[-1]


@pytest.mark.parametrize("user", ["", None])
def test_empty_user_id_is_refused(user):
    with pytest.raises(ValueError, match="non-empty"):
        user_file_name(user)
