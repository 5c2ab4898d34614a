"""flows.outputs: JSONL outputs read back as they are on disk, a torn last line skipped and reported."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flows.outputs import read_jsonl, read_jsonl_file

ASK = b'{"user_id": "ann", "event_id": "e1"}\n'


def test_a_torn_last_line_is_skipped_and_reported(tmp_path: Path, caplog) -> None:
    path = tmp_path / "annotation_requests.jsonl"
    path.write_bytes(ASK + b'{"user_id": "ann", "ev')
    with caplog.at_level(logging.WARNING, logger="flows.outputs"):
        assert read_jsonl(path) == [{"user_id": "ann", "event_id": "e1"}]
    assert "skipped 1 torn last line" in caplog.text
    read = read_jsonl_file(path)
    assert (len(read.records), read.torn, read.bad) == (1, 1, 0)


def test_a_whole_last_record_without_its_newline_is_read(tmp_path: Path) -> None:
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(ASK + ASK.rstrip(b"\n"))
    assert len(read_jsonl(path)) == 2 and read_jsonl_file(path).torn == 0


@pytest.mark.parametrize("bad", [b"not json\n", b'["a list"]\n', b"\xff\xfe\n", b'{"cut": \n'])
def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(ASK + bad + ASK)
    with pytest.raises(ValueError, match=r"dead_letters.jsonl line 2 is not a JSON object"):
        read_jsonl(path)
    assert read_jsonl_file(path).bad_at == [(path, 2)]


def test_identical_lines_are_distinct_records_unless_a_key_says_otherwise(tmp_path: Path) -> None:
    # Two re-sent copies of an event make two identical duplicate_event dead letters: both count.
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(ASK * 3)
    assert len(read_jsonl(path)) == 3
    assert read_jsonl(path, key=lambda r: (r["user_id"], r["event_id"])) == [{"user_id": "ann", "event_id": "e1"}]


def test_worker_files_are_read_after_the_first(tmp_path: Path) -> None:
    (tmp_path / "dead_letters.jsonl").write_bytes(b'{"w": 0}\n')
    (tmp_path / "dead_letters.w1.jsonl").write_bytes(b'{"w": 1}\n{"w": 1, "torn')
    (tmp_path / "dead_letters_other.jsonl").write_bytes(b"not ours\n")
    assert read_jsonl(tmp_path / "dead_letters.jsonl") == [{"w": 0}, {"w": 1}]
