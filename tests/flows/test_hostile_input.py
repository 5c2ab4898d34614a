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
from flows.sinks import _decision_table
from operators import metrics
from operators.config import load_settings
from operators.events import REASONS, Annotation, Event, Rejected
from operators.policies import make_policy
from operators.scoring import ScoredEvent
from operators.state import UserState
from tests.flows.test_kafka_flow import PARTITIONS, consume_all, settings_for, topics  # noqa: F401
from tests.deployment import dead_letter_lines, decision_copies
from tests.hostile import LIMITS, default_redactor, draw, hostile, ids_of, tally

N = 1200
EXCERPT = LIMITS["dead_letter_excerpt_bytes"]
BOUND = dead_letter_bytes(EXCERPT)
REDACTOR = default_redactor()  # the flow's path: PII redacted (privacy.pii: redact, the default)


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
    parsed = parse_bounded((channel, payload), max_bytes=LIMITS["max_message_bytes"], max_chars=LIMITS["max_chars"],
                           redactor=REDACTOR)
    if isinstance(parsed, Rejected):
        assert parsed.reason in REASONS, parsed
        dead = bound_dead_letter(parsed.to_dict(), excerpt_bytes=EXCERPT, redactor=REDACTOR)
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
        json_line(out.to_dict()).encode("utf-8")
        if out.kind == "decision":
            _decision_table([out.to_dict()])
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


def assert_accounted(items: list[tuple[str, bytes]], out: Path) -> dict:
    """Every payload reached its outcome once: decided, dead-lettered, or (a valid annotation) counted."""
    report = tally(items, decision_copies(out), dead_letter_lines(out))
    assert report["lost"] == 0, report["lost_examples"][:5]
    assert report["bad_dead_lettered"] == report["bad"] > N // 2
    assert report["decision_rows_twice"] == report["dead_letters_repeated"] == report["unexpected"] == 0, report
    return report


def assert_bounded(path: Path) -> list[dict]:
    read = read_jsonl_file(path)
    assert read.torn == 0 and read.bad == 0
    sizes = [len(line.encode("utf-8")) for line in dead_letter_lines(path.parent)]
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
    assert_bounded(tmp_path / "out" / "dead_letters.jsonl")
    report = assert_accounted([("event", line) for line in lines], tmp_path / "out")
    assert report["decided"] > 50 and report["reasons"]["duplicate_event"] > 0


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
    # Events and answers come from two topics and four partitions: accounted per channel, in their order.
    report = assert_accounted([("event", p) for p in events] + [("annotation", p) for p in answers], tmp_path)
    # Valid answers are not dead letters: each is counted in edgetune_annotations_total (attached, early, ...).
    counted = sum(metrics.ANNOTATIONS.labels(status=s)._value.get() - before[s] for s in statuses)
    assert report["counted"] > 20 and counted >= report["counted"]
    assert report["reasons"]["unknown_event"] > 0  # answers whose event never came: dead letters, not dropped
    on_topic = consume_all(kafka_broker, topics["dead"], expected=len(dead), timeout_s=30)
    assert Counter(d["reason"] for d in on_topic) == Counter(d["reason"] for d in dead)


def test_the_tally_sees_a_lost_payload_a_repeated_line_and_a_row_written_twice():
    good = b'{"event_id": "e1", "user_id": "ann", "ts": 1, "prompt": "hi"}'
    again = b'{"event_id": "e1", "user_id": "ann", "ts": 2, "prompt": "hi again"}'  # the same id, other content
    bad = b'{"event_id": "e2", "user_id": "ann", "ts": 1'
    items = [("event", good), ("event", bad), ("event", good), ("event", again)]

    def dead_letter(record: dict) -> str:
        return json_line(bound_dead_letter(record, excerpt_bytes=EXCERPT))

    parsed = parse_bounded(("event", bad), max_bytes=LIMITS["max_message_bytes"], max_chars=LIMITS["max_chars"])
    dead = dead_letter(parsed.to_dict())
    dup1, dup2 = (dead_letter({"reason": "duplicate_event", "user_id": "ann", "event_id": "e1", "detail": "seen",
                               "raw": json.dumps({"event_id": "e1", "user_id": "ann", "ts": ts, "prompt": p},
                                                 ensure_ascii=False)}) for ts, p in ((1, "hi"), (2, "hi again")))
    row = {"user_id": "ann", "event_id": "e1"}
    whole = tally(items, [row], [dead, dup1, dup2])
    assert (whole["lost"], whole["bad"], whole["bad_dead_lettered"], whole["decided"]) == (0, 3, 3, 1)
    assert tally(items, [], [dead, dup1, dup2])["lost"] == 1
    assert tally(items, [row], [dup1, dup2])["lost"] == 1
    assert tally(items, [row], [dead, dup1, dup1])["lost"] == 1  # one repeat's dead letter is missing
    # A restart wrote a line again: repeated (identical, merged by dedup), not unexpected.
    twice = tally(items, [row, row], [dead, dup1, dead, dup1, dup2])
    assert (twice["decision_rows_twice"], twice["dead_letters_repeated"], twice["unexpected"]) == (1, 2, 0)
    assert tally(items, [row, {"user_id": "bob", "event_id": "x"}], [dead, dup1, dup2])["unexpected"] == 1
    # With the key (where each payload was read): the same bad payload sent twice is two dead letters;
    # the same line written again by a restart is one.
    at = {n: json_line({**json.loads(dead), "source": f"replay/{n}"}) for n in (1, 2)}
    resent = [("event", bad), ("event", bad)]
    assert tally(resent, [], [at[1], at[2]])["lost"] == 0
    again = tally(resent, [], [at[1], at[1]])
    assert (again["lost"], again["dead_letters_repeated"]) == (1, 1)


def test_the_tally_wants_one_dead_letter_for_an_answer_whose_event_never_came():
    event = b'{"event_id": "e1", "user_id": "ann", "ts": 1, "prompt": "hi"}'
    answered = b'{"event_id": "e1", "user_id": "ann", "ts": 2, "response": "yes"}'
    first, newer = (json.dumps({"event_id": "e9", "user_id": "ann", "ts": ts, "response": r}).encode()
                    for ts, r in ((3, "first"), (4, "newer")))
    items = [("annotation", answered), ("event", event), ("annotation", first), ("annotation", newer)]

    def dead_letter(ts: int, response: str) -> str:
        raw = json.dumps({"event_id": "e9", "user_id": "ann", "ts": ts, "response": response}, ensure_ascii=False)
        return json_line(bound_dead_letter({"reason": "unknown_event", "user_id": "ann", "event_id": "e9",
                                            "detail": "never sent", "raw": raw}, excerpt_bytes=EXCERPT))
    row = {"user_id": "ann", "event_id": "e1"}
    whole = tally(items, [row], [dead_letter(4, "newer")])
    assert (whole["lost"], whole["unexpected"], whole["counted"], whole["superseded"], whole["bad_dead_lettered"]) == (
        0, 0, 1, 1, 1)
    assert tally(items, [row], [])["lost"] == 1  # the newest answer for e9 was dropped
    # The older answer's dead letter is allowed too (pushed out of a full stash before the newer came).
    assert tally(items, [row], [dead_letter(3, "first"), dead_letter(4, "newer")])["unexpected"] == 0
    assert tally(items, [row], [dead_letter(3, "first")])["lost"] == 1
    stopped = tally(items, [row], [], ended=False)  # stopped by a signal: the answer still waits in the state
    assert (stopped["lost"], stopped["waiting"], stopped["bad"]) == (0, 1, 0)

