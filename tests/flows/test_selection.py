"""Routing of the per-user step's typed rows: each reaches exactly the stream of its type."""

from __future__ import annotations

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.selection import _route
from operators.events import Rejected
from operators.rows import AnnotationRequest, AnswerOutcome, BufferView, DecisionRow, TrainRequest

TYPES = (DecisionRow, Rejected, AnnotationRequest, AnswerOutcome, TrainRequest, BufferView)
ROWS = [
    AnswerOutcome("u", "e1", "early"),
    DecisionRow("u", "e0", 0, 100, "fifo", "admitted", True, None, "general", 0.5, 0.0,
                None, None, None, 3, False, 1, 0.01, 0.002, 0.0001),
    AnnotationRequest("u", "e0", 100, "a question"),
    Rejected("duplicate_event", "event_id 'e0' was already seen", "{}", "utf-8", "u", "e0"),
    TrainRequest("u", 0, 2, "events", []),
    BufferView("u", "fifo", 2, []),
    AnswerOutcome("u", "e1", "attached", 40),
]


def _routed(items: list) -> list[list]:
    flow = Dataflow("route_test")
    streams = _route(op.input("read", flow, TestingSource(items)), *TYPES)
    caught: list[list] = [[] for _ in TYPES]
    for i, stream in enumerate(streams):
        op.output(f"out{i}", stream, TestingSink(caught[i]))
    run_main(flow)
    return caught


def test_every_row_reaches_the_stream_of_its_type_once_and_in_order():
    caught = _routed(ROWS)
    assert caught == [[r for r in ROWS if type(r) is t] for t in TYPES]
    assert [len(c) for c in caught] == [1, 1, 1, 2, 1, 1]


def test_an_item_of_no_row_type_stops_the_flow_naming_it():
    with pytest.raises(Exception) as stopped:
        _routed([{"kind": "decision"}])
    cause = stopped.value
    while cause.__cause__ is not None:  # Bytewax wraps the step's error
        cause = cause.__cause__
    assert isinstance(cause, TypeError) and "emitted a dict, which no output takes" in str(cause)
