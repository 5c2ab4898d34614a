"""Hostile input, part of the fault suite: 1,200 hypothesis-generated payloads (tests/hostile.py).

They go through the real parse/validate path one by one, and end to end: as a JSONL replay and
over the real Tansu broker (events and annotations topics). Every payload is decided or
dead-lettered with a reason, the flow never stops, and no dead letter is larger than the bound.
The corpus is drawn with a fixed seed, so CI sees the same payloads in every run.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bytewax.testing import run_main
from hypothesis import given, settings
from kafka import KafkaProducer

from flows import kafka_flow, replay_flow
from flows.deadletters import bound_dead_letter, dead_letter_bytes, json_line, parse_bounded
from flows.outputs import read_jsonl_file
from flows.selection import build_components
from flows.sinks import _decision_table, read_decisions
from operators import metrics
from operators.config import load_settings
from operators.events import REASONS, Annotation, Event, Rejected
from operators.policies import make_policy
from operators.scoring import ScoredEvent
from operators.state import UserState
from tests.flows.test_kafka_flow import PARTITIONS, consume_all, settings_for, topics  # noqa: F401
from tests.hostile import LIMITS, draw, hostile

N = 1200
EXCERPT = LIMITS["dead_letter_excerpt_bytes"]
BOUND = dead_letter_bytes(EXCERPT)


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    payloads = draw(hostile(), N, seed_value=0)
    assert len(payloads) == N
    return payloads


@pytest.fixture(scope="module")
def components():
    return build_components(load_settings(**{"model.lm": "tiny-random", "metrics.port": 0, **LIMITS}))


# --- the parse/validate path, payload by payload -----------------------------------------------------


def check_one(channel: str, payload: bytes, state: UserState) -> str:
    """What the flow's steps do with one payload, each checked; returns the reason or the kind."""
    parsed = parse_bounded((channel, payload), max_bytes=LIMITS["max_message_bytes"], max_chars=LIMITS["max_chars"])
    if isinstance(parsed, Rejected):
        assert parsed.reason in REASONS, parsed
        dead = bound_dead_letter(parsed.to_dict(), excerpt_bytes=EXCERPT)
        line = json_line(dead).encode("utf-8")  # what both dead-letter sinks write
        assert len(line) <= BOUND, (len(line), parsed.reason)
        assert dead["raw_bytes"] == len(payload) and dead["raw_sha256"] == hashlib.sha256(payload).hexdigest()
        return parsed.reason
    texts = [parsed.response or ""] + ([parsed.prompt] if isinstance(parsed, Event) else [])
    for text in texts:
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)  # encodes as UTF-8 everywhere
        assert not any(ord(c) < 32 and c not in "\t\n\r" for c in text)
        assert len(text) <= LIMITS["max_chars"]
    if isinstance(parsed, Annotation):
        outputs = state.on_annotation(parsed)
    else:
        vector = np.eye(4, dtype=np.float32)[zlib.crc32(payload) % 4]
        outputs = state.on_event(ScoredEvent(parsed, vector, 5, 0.5, 0.25, "general"))
    for out in outputs:  # every output reaches a sink that encodes it
        json_line(out.payload).encode("utf-8")
        if out.kind == "decision":
            _decision_table([out.payload])
    return type(parsed).__name__


def test_every_payload_through_the_parse_path_is_accepted_clean_or_rejected_with_a_bounded_reason(corpus):
    state = UserState("any", make_policy("fifo", capacity=8))  # one state for all: repeats are caught as duplicates
    kinds = Counter(check_one(channel, payload, state) for channel, payload in corpus)
    # The corpus really is hostile and really mixed: most reasons occur, and some payloads are fine.
    assert kinds["Event"] > 50 and kinds["Annotation"] > 20
    assert sum(kinds[r] for r in REASONS) > N // 2
    assert {"malformed_json", "invalid_utf8", "wrong_type", "control_chars", "too_large", "too_deep",
            "bad_timestamp", "missing_field", "unknown_field", "not_an_object"} <= set(kinds)
    # The state the hostile stream left still round-trips through a snapshot (pickled, as Bytewax stores it).
    blob = pickle.dumps(state.snapshot())
    assert pickle.dumps(UserState.from_snapshot(pickle.loads(blob)).snapshot()) == blob


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(hostile())
def test_one_hostile_payload_never_breaks_a_step(item):
    # The same checks, with shrinking: a failure here reports the smallest payload that breaks a step.
    check_one(*item, UserState("any", make_policy("fifo", capacity=2)))


# --- end to end ----------------------------------------------------------------------------------------


def ids_of(payload: bytes) -> tuple[str, str] | None:
    """(user_id, event_id) of a payload that decodes to an object with string ids, by plain json."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("user_id"), str) and isinstance(obj.get("event_id"), str):
        return obj["user_id"], obj["event_id"]
    return None


def account(payloads: list[bytes], out: Path, dead: list[dict], answers: list[bytes] = ()) -> Counter:
    """Match every payload to one decision or one dead letter; fail on anything left over either side.

    ``answers`` (annotation payloads) are never decided: a rejected one must match a dead letter.
    """
    rows = read_decisions(out / "decisions").to_pylist()
    decided = Counter((r["user_id"], r["event_id"]) for r in rows)
    assert max(decided.values(), default=1) == 1  # one decision per (user, event)
    rejected = Counter(d["raw_sha256"] for d in dead if d["reason"] != "duplicate_event")
    duplicates = Counter((d["user_id"], d["event_id"]) for d in dead if d["reason"] == "duplicate_event")
    unmatched = []
    for payload in answers:
        parsed = parse_bounded(("annotation", payload), max_bytes=LIMITS["max_message_bytes"],
                               max_chars=LIMITS["max_chars"])
        if isinstance(parsed, Rejected):
            digest = hashlib.sha256(payload).hexdigest()
            if rejected[digest]:
                rejected[digest] -= 1
            else:
                unmatched.append(payload[:200])
    for payload in payloads:
        digest = hashlib.sha256(payload).hexdigest()
        key = ids_of(payload)
        if rejected[digest]:
            rejected[digest] -= 1
        elif key is not None and decided[key]:
            decided[key] -= 1
        elif key is not None and duplicates[key]:
            duplicates[key] -= 1
        else:
            unmatched.append(payload[:200])
    assert not unmatched, unmatched[:5]
    assert not +rejected and not +decided and not +duplicates  # nothing decided or dead-lettered twice
    return Counter(d["reason"] for d in dead)


def assert_bounded(path: Path) -> list[dict]:
    read = read_jsonl_file(path)
    assert read.torn == 0 and read.bad == 0
    sizes = [len(line.encode("utf-8")) for line in path.read_text(encoding="utf-8").splitlines()]
    assert max(sizes) <= BOUND, max(sizes)
    return read.records


def test_a_replay_of_the_hostile_corpus_decides_or_dead_letters_every_line(corpus, components, tmp_path):
    lines = [payload for _, payload in corpus]  # annotations too: sent to the events file, they are bad events
    events = tmp_path / "hostile.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in lines))
    settings = load_settings(**{
        "model.lm": "tiny-random", "metrics.port": 0, "output.dir": tmp_path / "out", "source.path": events,
        "source.split": "field", "train.enabled": False, "buffer.policy": "fifo", "buffer.capacity": 8,
        "annotation.replay_answers": "keep", **LIMITS})
    settings = settings.model_copy(update={"source": settings.source.model_copy(update={"limit": None})})
    run_main(replay_flow.build_flow(settings, components))  # returns: the flow did not stop on any of them
    reasons = account(lines, tmp_path / "out", assert_bounded(tmp_path / "out" / "dead_letters.jsonl"))
    assert sum(reasons.values()) > N // 2 and reasons["duplicate_event"] > 0


def produce(broker, topic: str, payloads: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=4 << 20)
    for i, payload in enumerate(payloads):
        key = ids_of(payload)
        user = key[0] if key else f"#{i}"
        # One user's messages in one partition, as a producer keying by user does.
        producer.send(topic, key=user.encode("utf-8", "backslashreplace"), value=payload,
                      partition=zlib.crc32(user.encode("utf-8", "backslashreplace")) % PARTITIONS)
    producer.flush()
    producer.close()


@pytest.mark.kafka
def test_the_hostile_corpus_over_kafka_is_decided_dead_lettered_or_counted(corpus, components, kafka_broker, topics,
                                                                          tmp_path):
    events = [p for channel, p in corpus if channel == "event"]
    answers = [p for channel, p in corpus if channel == "annotation"]
    produce(kafka_broker, topics["events"], events)
    produce(kafka_broker, topics["annotations"], answers)
    statuses = ("attached", "replaced", "unrequested", "not_buffered", "early", "unknown_event")
    before = {s: metrics.ANNOTATIONS.labels(status=s)._value.get() for s in statuses}
    settings = settings_for(kafka_broker, topics, tmp_path, **{"buffer.policy": "fifo", "buffer.capacity": 8,
                                                               "kafka.idle_stop_s": 3.0, **LIMITS})
    run_main(kafka_flow.build_flow(settings, components))

    dead = assert_bounded(tmp_path / "dead_letters.jsonl")
    account(events, tmp_path, dead, answers)
    # Valid answers are not dead letters: each is counted in edgetune_annotations_total (attached, early, ...).
    valid = [p for p in answers if not isinstance(parse_bounded(
        ("annotation", p), max_bytes=LIMITS["max_message_bytes"], max_chars=LIMITS["max_chars"]), Rejected)]
    counted = sum(metrics.ANNOTATIONS.labels(status=s)._value.get() - before[s] for s in statuses)
    assert len(valid) > 20 and counted >= len(valid)
    on_topic = consume_all(kafka_broker, topics["dead"], expected=len(dead), timeout_s=30)
    assert Counter(d["reason"] for d in on_topic) == Counter(d["reason"] for d in dead)
