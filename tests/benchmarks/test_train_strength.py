"""The training-strength benchmark must judge on prompts the policy table never uses."""

from __future__ import annotations

import pytest

from benchmarks import policy_table as pt
from benchmarks.bench_train_strength import load_validation


@pytest.mark.parametrize("dataset", pt.DATASETS)
def test_validation_shares_no_conversation_with_the_table(dataset):
    stream, test = pt.load_split(dataset, 60, 8)
    val = load_validation(dataset, 60, 8, 8)
    assert len(val) == 8
    table_ids = {e["event_id"] for e in stream + test}
    assert not table_ids & {e["event_id"] for e in val}
    assert not {e["conversation"] for e in stream + test} & {e["conversation"] for e in val}
    assert len({e["conversation"] for e in val}) == len(val)  # one turn per conversation


def test_asking_for_more_validation_than_the_dataset_has_is_a_clear_error():
    with pytest.raises(ValueError, match="validation events"):
        load_validation("chitchat", 60, 8, 10**7)
