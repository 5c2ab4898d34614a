"""The on-disk journal of training requests that have not finished."""

from __future__ import annotations

import pytest

from operators.pending import PendingRuns


def req(user: str, window: int) -> dict:
    return {"user_id": user, "window": window, "samples": [{"event_id": f"{user}-{window}", "prompt": "p", "response": "r"}]}


def test_a_restart_finds_the_newest_unfinished_request_of_each_user_in_arrival_order(tmp_path):
    journal = PendingRuns(tmp_path)
    keys = {(u, w): journal.put(req(u, w)) for u, w in [("bob", 1), ("ann", 1), ("bob", 2), ("cy", 1)]}
    journal.done(keys[("cy", 1)])
    found = PendingRuns(tmp_path).load()
    # bob's window 1 is superseded by window 2; order is that of the newest request per user
    assert [(r["user_id"], r["window"]) for _, r in found] == [("ann", 1), ("bob", 2)]
    assert found[0][1] == req("ann", 1)
    # the superseded file is gone, so the next start finds the same two
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(key for key, _ in found)


def test_keys_keep_growing_across_restarts_so_order_survives(tmp_path):
    first = PendingRuns(tmp_path).put(req("ann", 1))
    second = PendingRuns(tmp_path).put(req("bob", 1))
    assert first < second
    assert [r["user_id"] for _, r in PendingRuns(tmp_path).load()] == ["ann", "bob"]


def test_no_user_id_reaches_a_file_name(tmp_path):
    PendingRuns(tmp_path).put(req("../../etc/passwd", 1))
    (path,) = tmp_path.iterdir()
    assert "etc" not in path.name and path.parent == tmp_path


def test_a_done_request_is_not_found_again_and_done_twice_is_harmless(tmp_path):
    journal = PendingRuns(tmp_path)
    key = journal.put(req("ann", 1))
    journal.done(key)
    journal.done(key)
    assert journal.load() == []


def test_an_unreadable_file_is_set_aside_not_fatal(tmp_path):
    journal = PendingRuns(tmp_path)
    journal.put(req("ann", 1))
    (tmp_path / "000000000099-0123456789abcdef.json").write_text("{not json")
    assert [r["user_id"] for _, r in journal.load()] == ["ann"]
    assert (tmp_path / "000000000099-0123456789abcdef.json.bad").exists()


def test_bad_requests_and_keys_are_refused_when_written_not_at_restart(tmp_path):
    journal = PendingRuns(tmp_path)
    with pytest.raises(ValueError, match="user_id"):
        journal.put({"window": 1})
    with pytest.raises(TypeError):
        journal.put({"user_id": "ann", "samples": {object()}})
    with pytest.raises(ValueError, match="not a key"):
        journal.done("../adapters")
    assert journal.load() == []


def test_a_missing_directory_is_an_empty_journal(tmp_path):
    assert PendingRuns(tmp_path / "absent").load() == []


def test_the_journal_is_private_whatever_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0)
    try:
        journal = PendingRuns(tmp_path / "pending")
        journal.fail(journal.put(req("ann", 1)), "RuntimeError: boom")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "pending").stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pending").iterdir()] == [0o600]
