"""Smoke test of the policy table: the real pipeline, on the tiny random model and a tiny stream.

It checks that the pipeline produces cells and a table and that a rerun skips finished cells;
never the values (a random 2-layer model scores ~0 ROUGE whatever it is trained on).
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from benchmarks import policy_table as pt

ROWS = ("base", "random", "sdss", "whole", "sdss-synth1")
ARGS = [
    "--model", "tiny-random", "--stream", "60", "--window", "20", "--capacity", "4", "--test", "4",
    "--seeds", "1", "--max-new-tokens", "8", "--synth-tokens-per-pair", "16", "--embed-max-tokens", "64",
    "--only", "row=" + "+".join(ROWS),
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy_table")
    assert pt.main([*ARGS, "--out", str(out)]) == 0
    return out


def test_every_selected_cell_is_written(table):
    for dataset in pt.DATASETS:
        for row in ROWS:
            cell = json.loads((table / "cells" / dataset / row / "seed0.json").read_text())
            assert cell["dataset"] == dataset and cell["row"] == row and cell["seed"] == 0
            assert math.isfinite(cell["rouge1"]["mean"]) and cell["rouge1"]["n"] == 4
            assert math.isfinite(cell["test_loss"])
            assert cell["config_digest"] and cell["training_set"]["n"] >= 0
    # The buffer protocol: 3 windows x capacity 4; the whole stream: all 60 events; base: none.
    cell = lambda row: json.loads((table / "cells" / "chitchat" / row / "seed0.json").read_text())  # noqa: E731
    assert cell("sdss")["train"]["examples"] <= 12 and cell("sdss")["selection"]["per_window"] == [4, 4, 4]
    assert cell("whole")["train"]["examples"] == 60
    assert cell("base")["train"]["steps"] == 0


def test_report_has_every_row_with_finite_numbers(table):
    for name in ("table.csv", "table.md", "table.png"):
        assert (table / name).stat().st_size > 0
    with (table / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    done = {(r["dataset"], r["row"]) for r in rows if int(r["n_seeds"]) > 0}
    assert {(d, r) for d in pt.DATASETS for r in ROWS} <= done
    for r in rows:
        if int(r["n_seeds"]) > 0:
            assert math.isfinite(float(r["rouge1_mean"])) and math.isfinite(float(r["test_loss_mean"]))
    markdown = (table / "table.md").read_text()
    assert "tiny-random" in markdown and "Missing cells" in markdown  # fifo etc. were filtered out
    for row in ROWS:
        assert f"| {row} —" in markdown


def test_report_copies_its_tables_between_the_readme_markers(table, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{pt.README_BEGIN}\nstale numbers\n{pt.README_END}\nafter\n")
    pt.splice_readme(readme, table / "table.md")
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("intro\n") and text.endswith("after\n")
    inside = text.split(pt.README_BEGIN)[1].split(pt.README_END)[0]
    assert "#### Main table" in inside and "| sdss —" in inside and "#### Ablations" in inside
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        pt.splice_readme(readme, table / "table.md")


def test_each_test_turn_rule_refreshes_only_its_own_readme_tables(table, tmp_path):
    readme = tmp_path / "README.md"
    begin, end = pt.readme_markers("middle")
    readme.write_text(f"{pt.README_BEGIN}\nfirst-turns table\n{pt.README_END}\n{begin}\nstale\n{end}\n")
    pt.splice_readme(readme, table / "table.md", "middle")
    text = readme.read_text()
    assert "first-turns table" in text and "stale" not in text
    assert "#### Main table" in text.split(begin)[1].split(end)[0]


def test_rerun_skips_finished_cells(table, capsys):
    cells = sorted((table / "cells").rglob("seed*.json"))
    before = {p: p.stat().st_mtime_ns for p in cells}
    assert pt.main([*ARGS, "--out", str(table), "--no-report"]) == 0
    assert {p: p.stat().st_mtime_ns for p in cells} == before
    assert pt.main([*ARGS, "--out", str(table), "--list"]) == 0
    listing = capsys.readouterr().out
    assert f"{2 * len(ROWS)}/{2 * len(ROWS)} done" in listing


def test_another_configuration_refuses_to_mix(table):
    with pytest.raises(SystemExit, match="another configuration"):
        pt.main([*ARGS, "--out", str(table), "--test", "5", "--no-report"])


def test_cells_are_planned_most_informative_first():
    cells = pt.plan_cells(pt.DATASETS, seeds=3, whole_seeds=1)
    first_pass = [c for c in cells[: 2 * 7]]
    assert {c.row for c in first_pass} == {"base", "sdss", "random", "fifo", "reservoir", "kcenter", "whole"}
    assert all(c.seed == 0 for c in first_pass)
    tiers = [pt.ROWS[c.row].tier for c in cells]
    assert tiers.index("ablation") > max(i for i, t in enumerate(tiers) if t == "main")
    assert tiers.index("synthesis") > max(i for i, t in enumerate(tiers) if t == "ablation")
    assert sum(c.row == "base" for c in cells) == 2 and len(set(cells)) == len(cells)


def test_long_training_resumes_from_its_last_checkpointed_piece(tmp_path, monkeypatch):
    import models.train

    real = models.train.train_lora
    calls = []

    def stop_on_third_piece(*args, **kwargs):
        calls.append(kwargs.get("init_adapter"))
        if len(calls) == 3:
            raise KeyboardInterrupt("session ended")
        return real(*args, **kwargs)

    args = [*ARGS[:-2], "--only", "dataset=chitchat,row=whole", "--train-chunk", "25", "--no-report", "--out", str(tmp_path)]
    monkeypatch.setattr(models.train, "train_lora", stop_on_third_piece)
    with pytest.raises(KeyboardInterrupt):
        pt.main(args)
    assert not (tmp_path / "cells" / "chitchat" / "whole" / "seed0.json").exists()
    calls.clear()
    assert pt.main(args) == 0
    assert len(calls) == 1 and calls[0] is not None and calls[0].name == "piece1"  # only the third piece ran again
    cell = json.loads((tmp_path / "cells" / "chitchat" / "whole" / "seed0.json").read_text())
    assert cell["train"]["pieces"] == 3 and cell["train"]["examples"] == 60 and cell["train"]["steps"] == 7 + 7 + 3


@pytest.mark.parametrize("dataset", pt.DATASETS)
def test_middle_test_turns_take_one_middle_turn_from_each_unseen_conversation(dataset):
    from flows.replay import replay_events
    from operators.events import Event, parse_event

    stream, test = pt.load_split(dataset, 60, 6, "middle")
    assert (stream, len(test)) == (pt.load_split(dataset, 60, 6)[0], 6)  # the stream does not depend on it
    conversations = [e["conversation"] for e in test]
    assert len(set(conversations)) == 6
    assert not set(conversations) & {e["conversation"] for e in stream}
    # naive recomputation over the whole dataset: every labeled turn of those conversations, in order
    turns: dict[str, list[str]] = {c: [] for c in conversations}
    for raw in replay_events(dataset, n_users=1, split="round_robin", seed=0):
        event = parse_event(raw)
        if isinstance(event, Event) and event.response is not None and event.meta.get("conversation") in turns:
            turns[event.meta["conversation"]].append(event.event_id)
    for e in test:
        ids = turns[e["conversation"]]
        assert e["event_id"] == ids[len(ids) // 2]


@pytest.mark.parametrize("dataset", pt.DATASETS)
def test_validation_turns_are_middle_turns_of_the_conversations_after_every_test_set(dataset):
    from flows.replay import replay_events
    from operators.events import Event, parse_event

    stream, validation = pt.load_split(dataset, 60, 6, "validation")
    test_sets = [pt.load_split(dataset, 60, 6, rule)[1] for rule in ("all", "middle")]
    assert stream == pt.load_split(dataset, 60, 6)[0] and len(validation) == 6
    # naive recomputation: the labeled turns of every conversation after the stream, in order
    streamed = {e["conversation"] for e in stream}
    after: dict[str, list[str]] = {}
    seen = 0
    for raw in replay_events(dataset, n_users=1, split="round_robin", seed=0):
        event = parse_event(raw)
        if not isinstance(event, Event) or event.response is None:
            continue
        seen += 1
        conversation = event.meta.get("conversation", event.event_id)
        if seen > 60 and conversation not in streamed:
            after.setdefault(conversation, []).append(event.event_id)
    order = list(after)
    assert [e["conversation"] for e in validation] == order[6:12]  # the 6 after the middle rule's 6
    for e in validation:
        assert e["event_id"] == after[e["conversation"]][len(after[e["conversation"]]) // 2]
    taken = {e["conversation"] for e in validation}
    for test in test_sets:
        assert not taken & {e["conversation"] for e in test}


def test_an_unknown_test_turn_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="test_turns"):
        pt.load_split("chitchat", 60, 6, "last")
    with pytest.raises(ValueError, match="--test-turns"):
        pt.TableConfig(test_turns="last")


def test_the_first_test_turn_rule_keeps_the_digest_of_cells_made_before_it_existed():
    before = pt.TableConfig(stream=1150, window=200, capacity=16)
    middle = pt.TableConfig(stream=1150, window=200, capacity=16, test_turns="middle")
    assert before.digest() == "27edfbce484e3ab3"  # the committed quarter table's cells carry this digest
    assert before.data_key() == "smollm2-135m-instruct-s1150-t40-e128"
    assert middle.digest() != before.digest() and middle.data_key() != before.data_key()
