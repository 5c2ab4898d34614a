"""Training windows of one user's state: by event count, by event time, and across a snapshot."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from operators.config import load_settings
from operators.events import Annotation, Event
from operators.policies import make_policy
from operators.scoring import ScoredEvent
from operators.state import UserState


def scored(event_id: str, ts_ms: int) -> ScoredEvent:
    vector = np.zeros(4, dtype=np.float32)
    vector[len(event_id) % 4] = 1.0
    return ScoredEvent(Event(event_id, "u", ts_ms, f"question {event_id}", "an answer"), vector, 3, 0.5, 0.0, "general")


def windows(state: UserState, stream: list[tuple[str, int]]) -> list[tuple[str, int, str, list[str]]]:
    """(event that was arriving, events_seen, trigger, sample ids) of every window that closed."""
    out = []
    for event_id, ts in stream:
        for o in state.on_event(scored(event_id, ts)):
            if o.kind == "train_request":
                out.append((event_id, o.events_seen, o.trigger, sorted(s["event_id"] for s in o.samples)))
    return out


# Windows of 1,000 ms: [0, 1000), [1000, 2000), ... Worked out by hand:
#   e0 @100, e1 @900        window [0, 1000)
#   e2 @1000                crosses 1000: closes [0, 1000) with e0, e1 before e2 is offered
#   e3 @1500, e4 @400       e4 is late (its window closed): offered, closes and opens nothing
#   e5 @5200                crosses 2000 (and the empty 3000, 4000 windows): one close, with e0-e4
#   e6 @5300                same window as e5
STREAM = [("e0", 100), ("e1", 900), ("e2", 1000), ("e3", 1500), ("e4", 400), ("e5", 5200), ("e6", 5300)]


def test_event_time_windows_close_when_the_users_clock_crosses_a_boundary():
    state = UserState("u", make_policy("fifo", capacity=10), window_ms=1000)
    assert windows(state, STREAM) == [
        ("e2", 2, "event_time", ["e0", "e1"]),
        ("e5", 5, "event_time", ["e0", "e1", "e2", "e3", "e4"]),
    ]
    assert state.window_end_ms == 6000 and state.n_windows == 2


def test_count_and_event_time_windows_together_never_close_an_empty_window():
    state = UserState("u", make_policy("fifo", capacity=10), window_events=2, window_ms=1000)
    # Count closes after e1, e3, e5 (the 2nd, 4th, 6th event). e2 crosses 1000 right after the count close at
    # e1, with nothing new since: no second window. e5 crosses 2000 with e4 new since e3's close: it closes.
    assert [(e, n, t) for e, n, t, _ in windows(state, STREAM)] == [
        ("e1", 2, "events"), ("e3", 4, "events"), ("e5", 5, "event_time"), ("e5", 6, "events"),
    ]


def test_a_duplicate_event_does_not_move_the_clock():
    state = UserState("u", make_policy("fifo", capacity=10), window_ms=1000)
    assert windows(state, [("e0", 100), ("e0", 9000), ("e1", 200)]) == []
    assert state.window_end_ms == 1000


def test_event_time_windows_resume_from_a_snapshot_mid_window():
    whole = UserState("u", make_policy("fifo", capacity=3), window_ms=1000)
    expected = windows(whole, STREAM)
    first = UserState("u", make_policy("fifo", capacity=3), window_ms=1000)
    got = windows(first, STREAM[:4])
    resumed = UserState.from_snapshot(first.snapshot())
    got += windows(resumed, STREAM[4:])
    assert got == expected
    for key in ("window_ms", "window_end_ms", "n_windows", "last_window_events", "n_events", "texts"):
        assert resumed.snapshot()[key] == whole.snapshot()[key], key


def test_a_snapshot_from_before_event_time_windows_restores_without_them():
    state = UserState("u", make_policy("fifo", capacity=3), window_events=2)
    windows(state, STREAM[:3])
    snap = state.snapshot()
    del snap["window_ms"], snap["window_end_ms"]
    restored = UserState.from_snapshot(snap)
    assert restored.window_ms == 0 and restored.window_end_ms is None
    assert [(e, t) for e, _, t, _ in windows(restored, STREAM[3:])] == [("e3", "events"), ("e5", "events")]


def test_settings_refuse_training_that_no_window_would_ever_trigger():
    with pytest.raises(ValidationError, match="no training window would ever close"):
        load_settings(**{"train.window_events": 0, "train.train_on_eof": False})
    assert load_settings(**{"train.window_events": 0, "train.window_seconds": 3600, "train.train_on_eof": False})
    assert load_settings(**{"train.window_events": 0, "train.train_on_eof": False, "train.enabled": False})


def unlabeled(event_id: str, ts_ms: int, vector_at: int) -> ScoredEvent:
    vector = np.zeros(4, dtype=np.float32)
    vector[vector_at] = 1.0
    return ScoredEvent(Event(event_id, "u", ts_ms, f"question {event_id}", None), vector, 3, 0.5, 0.0, "general")


def kinds(outputs) -> list[tuple[str, str]]:
    return [(o.kind, getattr(o, "status", getattr(o, "outcome", ""))) for o in outputs]


def test_an_answer_before_its_event_waits_and_attaches_without_asking_again():
    state = UserState("u", make_policy("fifo", capacity=2))
    assert kinds(state.on_annotation(Annotation("e0", "u", 50, "early answer"))) == [("annotation", "early")]
    out = state.on_event(unlabeled("e0", 100, 0))
    assert kinds(out) == [("decision", "admitted"), ("annotation", "attached")]  # no annotation_request
    assert state.texts["e0"].response == "early answer" and state.early == {}
    assert [s["event_id"] for s in state.labeled_samples()] == ["e0"]
    # An event that asks as usual when no answer waits for it.
    assert kinds(state.on_event(unlabeled("e1", 200, 1))) == [("decision", "admitted"), ("annotation_request", "")]


def test_an_early_answer_whose_event_is_not_admitted_is_not_buffered():
    state = UserState("u", make_policy("sdss", capacity=1, seed=0, dup_threshold=0.95))
    state.on_event(unlabeled("e0", 100, 0))
    state.on_annotation(Annotation("e1", "u", 150, "answer to a near-duplicate"))
    out = state.on_event(unlabeled("e1", 200, 0))  # the same vector: a near-duplicate, never admitted
    assert kinds(out) == [("decision", "duplicate"), ("annotation", "not_buffered")]
    assert "e1" not in state.texts and state.early == {}


def test_the_early_stash_is_bounded_and_survives_a_snapshot():
    state = UserState("u", make_policy("fifo", capacity=4), max_early=2)
    state.on_annotation(Annotation("e0", "u", 1, "a0"))
    state.on_annotation(Annotation("e1", "u", 2, "a1"))
    out = state.on_annotation(Annotation("e2", "u", 3, "a2"))  # full: the oldest, e0, is given up
    assert kinds(out) == [("annotation", "unknown_event"), ("dead_letter", ""), ("annotation", "early")]
    assert [o.event_id for o in out] == ["e0", "e0", "e2"]
    dead = out[1]  # not dropped unseen: dead-lettered with the answer itself
    assert (dead.reason, dead.user_id, "max_early" in dead.detail) == ("unknown_event", "u", True)
    assert json.loads(dead.raw) == {"event_id": "e0", "user_id": "u", "ts": 1, "response": "a0"}
    restored = UserState.from_snapshot(state.snapshot())
    assert list(restored.early) == ["e1", "e2"] and restored.max_early == 2
    assert kinds(restored.on_event(unlabeled("e0", 10, 0))) == [("decision", "admitted"), ("annotation_request", "")]
    assert kinds(restored.on_event(unlabeled("e2", 11, 1)))[-1] == ("annotation", "attached")
    assert restored.texts["e2"].response == "a2"


def test_without_a_stash_an_answer_before_its_event_is_an_unknown_event_and_dead_lettered():
    state = UserState("u", make_policy("fifo", capacity=2), max_early=0)
    out = state.on_annotation(Annotation("e0", "u", 50, "early"))
    assert kinds(out) == [("annotation", "unknown_event"), ("dead_letter", "")]
    assert out[1].reason == "unknown_event" and json.loads(out[1].raw)["response"] == "early"
    assert kinds(state.on_event(unlabeled("e0", 100, 0)))[-1] == ("annotation_request", "")


def test_answers_still_waiting_when_the_input_ends_are_dead_lettered_once():
    state = UserState("u", make_policy("fifo", capacity=2))
    state.on_annotation(Annotation("e0", "u", 1, "a0"))
    state.on_annotation(Annotation("e9", "u", 2, "a9"))  # its event never comes
    state.on_event(unlabeled("e0", 10, 0))  # e0's answer attaches
    out = state.end_of_input()
    assert kinds(out) == [("annotation", "unknown_event"), ("dead_letter", "")]
    assert json.loads(out[1].raw) == {"event_id": "e9", "user_id": "u", "ts": 2, "response": "a9"}
    assert "input ended" in out[1].detail and state.early == {}
    assert state.end_of_input() == []  # a second end (a resumed run ending again) writes nothing twice


# --- the repeat guard: bounded, with a stated guarantee ------------------------------------


def outcomes(state: UserState, ids: list[str]) -> list[str]:
    """What became of each arriving event id: its decision outcome, or the dead-letter reason."""
    out = []
    for i, event_id in enumerate(ids):
        first = state.on_event(scored(event_id, i))[0]
        out.append(first.outcome if first.kind == "decision" else first.reason)
    return out


def test_a_repeat_within_the_last_n_event_ids_is_caught_and_an_older_one_is_not():
    # fifo of 1 keeps only the newest event, so the guard alone decides about e0.
    state = UserState("u", make_policy("fifo", capacity=1), dedup_window=3)
    # e0 e1 e2: e0 is among the last 3 ids, so its repeat is caught.
    assert outcomes(state, ["e0", "e1", "e2", "e0"]) == ["admitted", "replaced", "replaced", "duplicate_event"]
    # e3 pushes e0 out of the last 3 (e1 e2 e3): e0 is offered again, as a new event.
    assert outcomes(state, ["e3", "e0"]) == ["replaced", "replaced"]
    assert len(state.seen) == 3


def test_a_repeat_of_an_event_still_in_the_buffer_is_caught_however_old():
    state = UserState("u", make_policy("fifo", capacity=4), dedup_window=1)
    assert outcomes(state, ["e0", "e1", "e2", "e0", "e1"]) == [
        "admitted", "admitted", "admitted", "duplicate_event", "duplicate_event"]


def test_the_guard_and_its_snapshot_stay_the_same_size_however_long_the_stream():
    state = UserState("u", make_policy("fifo", capacity=2), dedup_window=8)
    sizes = []
    for n in range(200):
        state.on_event(scored(f"e{n}", n))
        if n + 1 in (20, 200):
            sizes.append(len(state.snapshot()["seen"]["ids"]))
    assert sizes == [8, 8]
    assert state.snapshot()["seen"]["ids"] == [f"e{n}" for n in range(192, 200)]  # the newest 8, oldest first


def test_the_guard_survives_a_snapshot_in_order():
    state = UserState("u", make_policy("fifo", capacity=1), dedup_window=2)
    outcomes(state, ["a", "b"])
    restored = UserState.from_snapshot(state.snapshot())
    # "a" and "b" are still the last two ids: a repeat is caught; then "c" pushes "a" (the oldest) out.
    assert outcomes(restored, ["a", "c", "a"]) == ["duplicate_event", "replaced", "replaced"]


def test_a_snapshot_with_the_old_unbounded_id_set_restores_its_newest_ids():
    state = UserState("u", make_policy("fifo", capacity=1), dedup_window=3)
    outcomes(state, ["e1", "e2"])
    snap = state.snapshot()
    snap["seen"] = ["e1", "e2"]  # the format before the bound: every id, sorted
    del snap["dedup_window"]
    restored = UserState.from_snapshot(snap)
    assert restored.dedup_window == 4096 and outcomes(restored, ["e1"]) == ["duplicate_event"]


def test_the_window_is_a_setting():
    assert load_settings().buffer.dedup_window == 4096
    with pytest.raises(ValidationError, match="buffer.dedup_window"):
        load_settings(**{"buffer.dedup_window": 0})


# --- a recovery store written before the state was split still restores ------------------------
# tests/data/user_state_snapshot.pkl is UserState.snapshot() pickled (as Bytewax's recovery store does) by
# the code before the split, after: an early answer for e3 (max_early=2); e0 unlabeled @100, admitted and
# answered @150; e1 labeled @900; e2 unlabeled @1200 closes [0, 1000) and replaces e0 (fifo of 2), and
# closes the count window (window_events=3); a repeated e0 dead-lettered (dedup_window=4).
FIXTURE = Path(__file__).parents[1] / "data" / "user_state_snapshot.pkl"


def plain(x):
    """A snapshot with arrays as (dtype, values), so two snapshots compare with ==."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return (str(x.dtype), x.tolist())
    return x


def test_a_snapshot_from_before_the_split_restores_and_goes_on():
    with FIXTURE.open("rb") as f:
        snap = pickle.load(f)
    state = UserState.from_snapshot(snap)
    assert plain(state.snapshot()) == plain(snap)  # the same format, key for key
    assert kinds(state.on_event(unlabeled("e0", 1300, 0))) == [("dead_letter", "")]  # still among the last 4 ids
    # e3 @2100 crosses 2000 with nothing new since the count close: no window. fifo evicts e1; the waiting
    # answer attaches without a request.
    assert kinds(state.on_event(unlabeled("e3", 2100, 3))) == [("decision", "replaced"), ("annotation", "attached")]
    assert state.texts["e3"].response == "early answer" and state.early == {}
    # e4 evicts e2, which was asked about and never answered.
    assert kinds(state.on_event(scored("e4", 2200))) == [("decision", "replaced"), ("annotation", "unanswered")]
    # e5 @3000 crosses 3000 with e3, e4 new: a time close before it is offered, then the 6th event's count close.
    windows = [(o.window, o.trigger, [s["event_id"] for s in o.samples])
               for o in state.on_event(scored("e5", 3000)) if o.kind == "train_request"]
    assert windows == [(3, "event_time", ["e3", "e4"]), (4, "events", ["e4", "e5"])]
