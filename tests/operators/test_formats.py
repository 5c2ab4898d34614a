"""Mappers from dataset shapes to events, and the user split; expected values worked out by hand."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path

import pytest

from operators.formats import (
    DEFAULT_START_MS,
    assign_users,
    detect_format,
    from_alpaca,
    from_chitchat,
    from_dolly,
    from_sharegpt,
    synthetic_ts,
    to_events,
    topic_key,
    with_timestamps,
)

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "hi"}, "event"),
        ({"event_id": "e1", "user_id": "u1", "ts": 0}, "event"),  # missing prompt: still an event, for the validator
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"input": "a", "output": "b"}, "alpaca"),  # no instruction: alpaca that cannot be mapped
        ({"instruction": "a", "context": "", "response": "b", "category": "open_qa"}, "dolly"),
        ({"instruction": "a", "response": "b"}, "dolly"),
        ({"id": "x", "conversations": []}, "sharegpt"),
        ({"id": "x", "messages": []}, "chitchat"),
        ({"text": "hello"}, "unknown"),
        ("a string", "unknown"),
        (None, "unknown"),
    ],
)
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_alpaca_joins_instruction_and_input_with_a_blank_line():
    rec = {"instruction": "Translate the sentence into French.", "input": "The cat sleeps.", "output": "Le chat dort."}
    assert from_alpaca(rec, 1) == {
        "event_id": "alpaca-1-0",
        "prompt": "Translate the sentence into French.\n\nThe cat sleeps.",
        "response": "Le chat dort.",
        "meta": {"source": "alpaca", "record": 1},
    }


@pytest.mark.parametrize("rec", [{"instruction": "Hi", "input": "", "output": "Hello"}, {"instruction": "Hi", "output": "Hello"}])
def test_alpaca_without_input_is_the_instruction_alone(rec):
    assert from_alpaca(rec, 0)["prompt"] == "Hi"


def test_alpaca_without_output_is_unlabelled():
    assert "response" not in from_alpaca({"instruction": "Hi"}, 0)


@pytest.mark.parametrize("rec", [{"input": "cat", "output": "chat"}, {"instruction": 7, "output": "x"}])
def test_unmappable_alpaca_comes_back_as_is(rec):
    before = copy.deepcopy(rec)
    out = from_alpaca(rec, 0)
    assert out == before and "prompt" not in out
    assert rec == before


def test_alpaca_sample_file_maps_every_record():
    records = json.loads((DATA / "alpaca.json").read_text(encoding="utf-8"))
    events = [from_alpaca(r, i) for i, r in enumerate(records)]
    assert [e["event_id"] for e in events] == [f"alpaca-{i}-0" for i in range(10)]
    assert events[1]["prompt"] == "Translate the sentence into French.\n\nThe cat sleeps on the sofa."
    assert events[1]["response"] == "Le chat dort sur le canapé."
    assert events[5]["prompt"] == "Write a haiku about autumn."  # the record has no "input" key


def test_dolly_appends_context_and_keeps_category():
    rec = {
        "instruction": "How many moons does Mars have?",
        "context": "Mars has two moons.",
        "response": "Two.",
        "category": "closed_qa",
    }
    assert from_dolly(rec, 9) == {
        "event_id": "dolly-9-0",
        "prompt": "How many moons does Mars have?\n\nMars has two moons.",
        "response": "Two.",
        "meta": {"source": "dolly", "record": 9, "category": "closed_qa"},
    }


def test_dolly_sample_file():
    lines = (DATA / "dolly.jsonl").read_text(encoding="utf-8").splitlines()
    events = [from_dolly(json.loads(line), i) for i, line in enumerate(lines)]
    assert len(events) == 10
    assert events[1]["prompt"] == "What is a haiku?"  # empty context adds nothing
    assert [e["meta"]["category"] for e in events].count("open_qa") == 2


def test_sharegpt_sample_file_pairs_human_turns_with_the_next_reply():
    records = json.loads((DATA / "sharegpt.json").read_text(encoding="utf-8"))
    events = [e for i, r in enumerate(records) for e in from_sharegpt(r, i)]
    got = [(e["event_id"], e["prompt"], e.get("response"), e["meta"]["conversation"]) for e in events]
    assert got == [
        ("sharegpt-0-0", "What is the boiling point of water at sea level?", "100 degrees Celsius, or 212 degrees Fahrenheit.", "sg1_0"),
        ("sharegpt-0-2", "And on top of Mount Everest?", "About 70 degrees Celsius, because the air pressure is much lower.", "sg1_0"),
        # the system turn is not a prompt
        ("sharegpt-1-1", "Plan a day in Lisbon.", "Morning in Alfama, lunch in Baixa, sunset at Miradouro da Senhora do Monte.", "sg2_0"),
        # a split conversation opening with the assistant: that turn has no prompt
        ("sharegpt-2-1", "Which tram goes to Alfama?", "Tram 28.", "sg2_1"),
        # the human speaks twice: the first turn is unanswered
        ("sharegpt-3-0", "Write a limerick about a cat.", None, "sg3_0"),
        ("sharegpt-3-1", "Make it about a grumpy cat.", "A grumpy old cat named McGraw\nwould glare at the world with his paw...", "sg3_0"),
        ("sharegpt-3-3", "Thanks!", None, "sg3_0"),
        ("sharegpt-4-0", "How do I center a div?", "Use a flex container: display: flex; justify-content: center; align-items: center.", "sg4_0"),
    ]
    assert [e["meta"]["turn"] for e in events] == [0, 2, 1, 1, 0, 1, 3, 0]


@pytest.mark.parametrize(
    "rec",
    [
        {"id": "empty", "conversations": []},
        {"id": "assistant-only", "conversations": [{"from": "gpt", "value": "continued..."}]},
        {"id": "not-a-list", "conversations": "hello"},
        {"id": "no-role", "conversations": [{"value": "hi"}]},
    ],
)
def test_unmappable_sharegpt_comes_back_as_is(rec):
    assert from_sharegpt(rec, 0) == [rec]


def _message(text: str, sender: str, ts: str) -> list[dict]:
    return [{"text": text, "timestamp": ts, "sender": sender}]


def test_chitchat_pairs_do_not_overlap_and_keep_the_source_time():
    convo = {
        "id": "c1",
        "messages": [
            _message("Hello", "a", "2018-05-02T19:38:15Z"),
            _message("hey", "b", "2018-05-02T19:38:29Z"),
            _message("Cats or dogs?", "a", "2018-05-02T19:39:00Z"),
            _message("dogs", "b", "2018-05-02T19:39:10Z"),
            _message("Same!", "a", "2018-05-02T19:40:00Z"),
        ],
    }
    events = from_chitchat(convo, 4)
    assert [(e["event_id"], e["prompt"], e.get("response")) for e in events] == [
        ("chitchat-4-0", "Hello", "hey"),
        ("chitchat-4-2", "Cats or dogs?", "dogs"),
        ("chitchat-4-4", "Same!", None),
    ]
    assert events[1]["meta"] == {
        "source": "chitchat",
        "record": 4,
        "conversation": "c1",
        "turn": 2,
        "source_ts": "2018-05-02T19:39:00Z",
    }
    assert all("ts" not in e for e in events)  # the replay clock stamps ts, not the mapper


@pytest.mark.parametrize("convo", [{"id": "c", "messages": []}, {"id": "c", "messages": [[{"no_text": 1}]]}, {"messages": 3}])
def test_unmappable_chitchat_comes_back_as_is(convo):
    assert from_chitchat(convo, 0) == [convo]


def test_to_events_passes_events_and_unknown_shapes_through():
    event = {"event_id": "e1", "user_id": "u", "ts": 0, "prompt": "hi"}
    assert to_events(event, 0) == [event]
    assert to_events(b"raw", 0) == [b"raw"]
    assert to_events({"instruction": "a", "output": "b"}, 0, "dolly")[0]["event_id"] == "dolly-0-0"


def test_to_events_rejects_an_unknown_format_naming_it():
    with pytest.raises(ValueError, match="fmt='csv'"):
        to_events({}, 0, "csv")


def _conversation_events() -> list[dict]:
    # 4 conversations of sizes 3, 1, 2, 2, interleaved as a replay might see them.
    order = ["a", "b", "a", "c", "d", "a", "c", "d"]
    return [{"event_id": f"e{i}", "meta": {"conversation": c}} for i, c in enumerate(order)]


def test_round_robin_deals_events_in_turn():
    users = [e["user_id"] for e in assign_users(_conversation_events(), 3, "round_robin", seed=0)]
    assert users[:3] == users[3:6] and len(set(users[:3])) == 3
    assert sorted(users).count(users[0]) == 3


def test_topic_gives_each_user_whole_conversations_in_turn():
    events = list(assign_users(_conversation_events(), 2, "topic", seed=0))
    owner = {e["meta"]["conversation"]: e["user_id"] for e in events}
    assert all(e["user_id"] == owner[e["meta"]["conversation"]] for e in events)
    # conversations a, b, c, d appear in that order; 2 users in turn: a, c to one user and b, d to the other
    assert owner["a"] == owner["c"] != owner["b"] == owner["d"]


@pytest.mark.parametrize("how", ["round_robin", "topic", "hash"])
def test_split_is_deterministic_under_seed_and_seed_matters(how):
    events = [{"event_id": f"e{i}", "meta": {"conversation": f"c{i // 3}"}} for i in range(60)]
    first = [e["user_id"] for e in assign_users(events, 4, how, seed=7)]
    assert first == [e["user_id"] for e in assign_users(events, 4, how, seed=7)]
    others = {tuple(e["user_id"] for e in assign_users(events, 4, how, seed=s)) for s in range(5)}
    assert len(others) > 1


def test_hash_keeps_conversations_whole():
    events = [{"event_id": f"e{i}", "meta": {"conversation": f"c{i % 7}"}} for i in range(70)]
    users = defaultdict(set)
    for e in assign_users(events, 3, "hash", seed=1):
        users[e["meta"]["conversation"]].add(e["user_id"])
    assert all(len(u) == 1 for u in users.values())
    assert len(set().union(*users.values())) > 1


def test_field_keeps_user_ids_and_missing_stays_missing():
    events = [{"event_id": "e1", "user_id": "alice"}, {"event_id": "e2"}]
    assert list(assign_users(events, 0, "field")) == events


def test_assign_users_copies_events_and_passes_bytes_through():
    events = [{"event_id": "e1", "user_id": "old"}, b"not json", {"event_id": "e2"}]
    before = copy.deepcopy(events)
    out = list(assign_users(events, 2, "round_robin", seed=0))
    assert events == before
    assert out[1] == b"not json"
    assert out[0] is not events[0] and out[0]["user_id"].startswith("user-")


@pytest.mark.parametrize("n_users", [0, -1, 1.5, True])
def test_assign_users_rejects_bad_user_counts(n_users):
    with pytest.raises(ValueError, match="n_users="):
        list(assign_users([{"event_id": "e"}], n_users, "topic"))


def test_assign_users_rejects_unknown_split():
    with pytest.raises(ValueError, match="how='random'"):
        list(assign_users([], 2, "random"))


def test_topic_key_falls_back_to_the_event_id():
    assert topic_key({"event_id": "e", "meta": {"conversation": "c"}}) == "c"
    assert topic_key({"event_id": "e", "meta": {"category": "qa"}}) == "qa"
    assert topic_key({"event_id": "e", "meta": "not a dict"}) == "e"
    assert topic_key({"prompt": "x"}) is None


def test_timestamps_are_one_second_apart_from_the_start():
    events = list(with_timestamps([{"p": 1}, b"raw", {"p": 2, "ts": "2024-01-01T00:00:00Z"}, {"p": 3}]))
    assert events[0]["ts"] == DEFAULT_START_MS
    assert events[1] == b"raw"
    assert events[2]["ts"] == "2024-01-01T00:00:00Z"
    assert events[3]["ts"] == DEFAULT_START_MS + 3000
    assert synthetic_ts(2, start_ms=10, step_ms=5) == 20
