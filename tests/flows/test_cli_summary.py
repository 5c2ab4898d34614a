"""`edgetune summary` reports the output files as they are, for every user, with the lexicon domain named as such."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bytewax.testing import run_main

from flows.cli import main
from flows.replay_flow import build_flow
from flows.selection import build_components
from operators.config import load_settings

EVENTS = Path(__file__).parent.parent / "data" / "events.jsonl"  # users alice, bob, carol; 8 bad lines


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("summary") / "out"
    settings = load_settings(**{"model.lm": "tiny-random", "metrics.port": 0, "output.dir": folder,
                                "source.path": EVENTS, "source.split": "field", "train.enabled": False,
                                "buffer.capacity": 3})
    run_main(build_flow(settings, build_components(settings)))
    return folder


def summary(capsys, *args: str) -> str:
    assert main(["summary", *args]) == 0
    return capsys.readouterr().out


def test_every_dead_letter_counts_once_also_identical_ones_and_a_torn_last_line_is_reported(out, tmp_path, capsys):
    import json
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    dead = copy / "dead_letters.jsonl"
    lines = dead.read_bytes().splitlines(keepends=True)
    # One per bad line of the sample file, and the replay's answer to one of them (bad-2, whose event was rejected).
    assert len(lines) == 9
    first = json.loads(lines[0])
    assert first["source"].startswith("replay/")
    # The same bad input sent twice more: two identical records but for where they were read, both counted;
    # a restart wrote the first line again (the same source): counted once; then a stop cut a write short.
    resent = [(json.dumps({**first, "source": f"replay/{900 + i}"}) + "\n").encode() for i in range(2)]
    dead.write_bytes(b"".join(lines) + b"".join(resent) + lines[0] + lines[1][:25])
    text = summary(capsys, str(copy))
    assert "11 dead letters (12 lines in the files, 1 written again after a restart)" in text
    assert "1 torn last line(s) (a write cut short by a stop) and 0 unreadable line(s)" in text
    reasons = dict(re.findall(r"(\w+) (\d+)", text.split("dead letters: ")[-1].splitlines()[0]))
    assert sum(map(int, reasons.values())) == 11


def test_every_user_gets_examples_labelled_with_the_lexicon_domain(out, capsys):
    text = summary(capsys, str(out))
    assert "users: 3 (showing 1-3, 20 per page)" in text
    for user in ("alice", "bob", "carol"):  # the old summary showed examples for the first two users only
        assert f"examples kept for {user}" in text
    examples = [line for line in text.splitlines() if line.startswith("  [")]
    assert examples and all(line.startswith("  [lexicon domain: ") for line in examples)


def test_users_are_paged_or_chosen(out, capsys):
    text = summary(capsys, str(out), "--page-size", "1", "--page", "2")
    assert "users: 3 (showing 2-2, 1 per page; next: --page 3)" in text
    assert "examples kept for bob" in text and "alice" not in text.split("users:")[1]
    text = summary(capsys, str(out), "--user", "carol", "--user", "nobody")
    assert "no decisions or buffer for user(s) nobody" in text and "users: 1 of 3 (--user)" in text
    assert "examples kept for carol" in text and "examples kept for alice" not in text


def test_an_unreadable_decision_part_is_reported_not_fatal(out, tmp_path, capsys):
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    part = sorted((copy / "decisions").glob("part-*.parquet"))[0]
    whole = summary(capsys, str(copy)).splitlines()[1]
    part.write_bytes(part.read_bytes()[:100])  # a part a crash cut short
    text = summary(capsys, str(copy))
    assert f"decisions: 1 unreadable part(s), not counted above: {part.name}" in text
    assert whole != text.splitlines()[1]
