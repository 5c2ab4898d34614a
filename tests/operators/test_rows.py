"""The decision row: its columns are the decision log's, in order, and the step emits exactly them."""

from __future__ import annotations

import numpy as np

from operators.events import Event
from operators.policies import make_policy
from operators.rows import DecisionRow
from operators.scoring import ScoredEvent
from operators.state import UserState


def test_the_step_emits_a_row_with_exactly_the_columns_in_order():
    state = UserState("u", make_policy("fifo", capacity=2))
    event = Event("e0", "u", 7, "a question", None)
    row = state.on_event(ScoredEvent(event, np.eye(2, dtype=np.float32)[0], 3, 0.5, 0.0, "general"))[0].to_dict()
    assert list(row) == [name for name, _ in DecisionRow.columns()]
    assert DecisionRow(**row).to_dict() == row
    # An empty buffer: IDD 1 (1 - the mean cosine to nothing, taken as 0), no neighbour (-inf); fifo has
    # no score: None, not nan.
    row_scores = (row["outcome"], row["idd"], row["max_sim"], row["score"], row["labeled"])
    assert row_scores == ("admitted", 1.0, float("-inf"), None, False)


def test_optional_columns_give_their_base_type():
    kinds = dict(DecisionRow.columns())
    assert kinds["evicted_id"] is str and kinds["idd"] is float and kinds["seq"] is int and kinds["admitted"] is bool
