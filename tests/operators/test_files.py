"""operators.files on real files, under a umask that would leave everything world-readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from operators.files import atomic_write, open_private_append, private_mkdir


@pytest.fixture
def open_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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
    atomic_write(target, b"newer", durable=False)
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
