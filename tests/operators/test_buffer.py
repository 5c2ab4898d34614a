"""The buffer keeps the policy's samples and their texts in step, under every policy."""

from __future__ import annotations

import numpy as np
import pytest

from operators.buffer import Buffer
from operators.events import Annotation, Event
from operators.policies import POLICIES, make_policy
from operators.sample import Candidate


def offers(seed: int, n: int):
    """(event, candidate) pairs, some repeating an earlier vector (near copies for sdss), half unlabeled."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, 8)).astype(np.float32)
    for i in range(n):
        if i > 3 and rng.random() < 0.2:
            vecs[i] = vecs[int(rng.integers(i))]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(n):
        event = Event(f"e{i}", "u", 10 * i, f"question {i}", None if i % 2 else f"answer {i}")
        c = Candidate(f"e{i}", i, vecs[i], eoe=float(rng.random()), dss=float(rng.random()),
                      domain=str(rng.choice(["law", "cooking"])), ifd=float(rng.uniform(0.05, 0.95)),
                      uncertainty=float(rng.gamma(4.0, 0.5)))
        yield event, c


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_texts_hold_exactly_the_policys_samples_after_every_change(name):
    buffer = Buffer(make_policy(name, capacity=4, seed=3))
    for event, c in offers(5, 40):
        decision, gone = buffer.offer(event, c)
        assert list(buffer.texts) == [s.event_id for s in buffer.policy.samples()]
        assert (gone is None) == (decision.evicted is None)
        if int(c.seq) % 7 == 0:
            buffer.remove(buffer.policy.samples()[0].event_id)
            assert list(buffer.texts) == [s.event_id for s in buffer.policy.samples()]
    restored = Buffer.from_snapshot(buffer.snapshot())
    assert restored.view() == buffer.view() and restored.labeled_samples() == buffer.labeled_samples()


def test_an_answer_attaches_once_then_replaces_and_is_unrequested_for_a_labeled_sample():
    buffer = Buffer(make_policy("fifo", capacity=2))
    events = list(offers(1, 2))  # e0 labeled at the source, e1 unlabeled (asked at 10 ms)
    for event, c in events:
        buffer.offer(event, c)
    assert buffer.attach(Annotation("e1", "u", 25, "first")) == ("attached", 15)
    assert buffer.attach(Annotation("e1", "u", 40, "second")) == ("replaced", 30)
    assert buffer.attach(Annotation("e0", "u", 50, "ignored")) == ("unrequested", None)
    assert buffer.texts["e1"].response == "second" and buffer.texts["e0"].response == "answer 0"
    assert buffer.attach(Annotation("e9", "u", 60, "no such sample")) is None
