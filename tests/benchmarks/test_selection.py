"""The selection table's code, end to end on a tiny model (the method itself is measured by the
benchmark, not here)."""

import csv
import json

import pytest

from benchmarks.selection import cli
from benchmarks.selection.streams import StreamSpec, build, held_out_turn, is_low_value, stream_stats


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("selection")
    assert cli.main(["all", "--smoke", "--datasets", "chitchat", "--out", str(out)]) == 0
    return out


def test_streams_hold_the_promised_structure(smoke):
    saved = json.loads((smoke / "streams" / "chitchat.json").read_text())
    users = saved["users"]
    assert [u["split"] for u in users] == ["test", "test", "validation"]
    for u in users:
        ids = [e["event_id"] for e in u["stream"]]
        assert len(ids) == 60 and len(set(ids)) == 60  # unique per user, as the validator demands
        assert sorted(u["iid_order"]) == sorted(ids)  # the control is the same events, reordered
        streamed = {e["conversation"] for e in u["stream"] if e["kind"] == "turn"}
        assert not streamed & {t["conversation"] for t in u["test"]}  # no test context was streamed
    convs = [{e["conversation"] for e in u["stream"] if e["kind"] == "turn"} for u in users]
    assert not convs[0] & convs[1]  # users never share a conversation


def test_every_planned_row_ran_and_pairs_on_the_same_prompts(smoke):
    cells = list((smoke / "cells").glob("chitchat/*/*/*.json"))
    rows = {(p.parent.parent.name, p.parent.name) for p in cells}
    assert ("both", "base") in rows and ("realistic", "sdss") in rows and ("iid", "uds") in rows
    # each cell names the command that made it
    assert json.loads(cells[0].read_text())["command"].startswith("python -m benchmarks.selection all --smoke")
    with (smoke / "paired.csv").open() as handle:
        paired = list(csv.DictReader(handle))
    sdss = [r for r in paired if r["policy"] == "sdss" and r["baseline"] == "reservoir" and r["stream"] == "realistic"]
    assert {r["metric"] for r in sdss} == {"rouge1", "answer_loss"}
    for r in sdss:
        assert float(r["lo"]) <= float(r["diff"]) <= float(r["hi"])
        assert int(r["n_users"]) == 2
    table = (smoke / "table.md").read_text()
    assert table.startswith("# Selection on realistic user streams")
    assert f"Compute: {len(cells)} cells," in table  # base and whole, listed under both orders, counted once
    # the ablations are paired against shipped sdss; candidate rules are judged on validation users only
    ablations = [r for r in paired if r["policy"] == "sdss-no-eoe" and r["baseline"] == "sdss"]
    assert {r["metric"] for r in ablations} == {"rouge1", "answer_loss"}
    assert "| chitchat | realistic | sdss-no-eoe |" in table.split("## Ablations and synthesis")[1]
    assert "## Candidate rules" not in table


def test_a_second_run_is_a_no_op_and_another_spec_is_refused(smoke, caplog):
    before = {p: p.stat().st_mtime_ns for p in (smoke / "cells").rglob("*.json")}
    assert cli.main(["run", "--smoke", "--datasets", "chitchat", "--out", str(smoke)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (smoke / "cells").rglob("*.json")} == before
    with pytest.raises(ValueError, match="built with spec"):
        build("chitchat", StreamSpec(length=61, max_conversations=300), smoke / "streams")


def test_low_value_and_held_out_rules():
    assert is_low_value("thank you so much!") and is_low_value("ok") and not is_low_value("How do tides work?")
    turns = [{"prompt": "hello there", "turn": 0}, {"prompt": "what did you do this weekend at the lake", "turn": 2}]
    assert held_out_turn("sharegpt", turns) is None  # only an opening turn is context-free there
    assert held_out_turn("chitchat", turns)["turn"] == 2


def test_stream_statistics_are_measured_not_configured():
    events = [{"kind": "turn", "topic": t, "prompt": p, "conversation": c}
              for t, p, c in [("a", "why is the sky blue today", "c1"), ("a", "and at night time too", "c1"),
                              ("b", "thanks", "c2"), ("a", "why is the sky blue today", "c3")]]
    stats = stream_stats({"user": "u", "stream": events, "test": []})
    assert stats["mean_topic_run"] == pytest.approx((2 + 1 + 1) / 3, abs=0.005)  # runs a,a | b | a (stats round to 0.01)
    assert stats["low_value_share"] == 0.25 and stats["exact_duplicate_prompt_share"] == 0.25


def test_the_validation_split_runs_the_candidates_and_judges_them(smoke):
    assert cli.main(["all", "--smoke", "--split", "validation", "--datasets", "chitchat", "--out", str(smoke)]) == 0
    cells = list((smoke / "validation" / "cells").glob("chitchat/realistic/*/*.json"))
    from benchmarks.selection.plan import VALIDATION_ROWS

    assert {p.parent.name for p in cells} == set(VALIDATION_ROWS)
    assert {p.stem for p in cells} == {"chitchat-val2"}  # the validation user only, never a table user
    table = (smoke / "validation" / "table.md").read_text()
    assert "## Candidate rules against shipped sdss" in table
    for name in ("sdss-rank", "sdss-no-dss", "sdss-coverage", "deita"):
        assert f"| **{name}** | 1 | all |" in table
    for name in ("sdss-reservoir", "reservoir-dedup"):
        assert f"| **{name}** | 2 | all |" in table


def test_the_readme_gets_the_headline_table_between_its_markers(smoke, tmp_path):
    from benchmarks.selection.report import README_BEGIN, README_END, splice_readme

    headline = (smoke / "headline.md").read_text()
    assert "| sdss | 2 |" in headline and "| reservoir | 2 |" in headline
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{README_BEGIN}\nold numbers\n{README_END}\nafter\n")
    splice_readme(readme, smoke)
    text = readme.read_text()
    assert "old numbers" not in text and headline in text
    assert text.startswith("before\n") and text.endswith(f"{README_END}\nafter\n")
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        splice_readme(readme, smoke)


def test_topic_coverage_comes_from_recomputed_selections_that_match_their_cells(smoke):
    from benchmarks.selection.composition import composition, topic_match
    from benchmarks.selection.features import distinct_pairs, load_features
    from benchmarks.selection.report import load_cells

    with (smoke / "composition.csv").open() as handle:
        comp = list(csv.DictReader(handle))
    assert {r["row"] for r in comp} >= {"sdss", "random", "kcenter"}
    assert all(0.0 <= float(r["coverage"]) <= 1.0 and 0.0 <= float(r["tv"]) <= 1.0 for r in comp)
    assert "sdss-synth1" not in {r["row"] for r in comp}  # synthesis trains on more than the buffer
    table = (smoke / "table.md").read_text()
    assert "## Test-topic coverage of each training set" in table and "Left out" not in table

    # a cell whose recorded outcomes the recomputed selection does not reproduce is left out and named
    spec, fcfg, cfg = cli.configs(True)
    users = [u for u in build("chitchat", spec["chitchat"], smoke / "streams") if u["split"] == "test"]
    folder = next((smoke / "features").glob("chitchat-*")) / "test"
    feats = {"chitchat": load_features(folder, distinct_pairs(users), fcfg)}
    cells = load_cells(smoke, cfg)
    cell = next(iter(cells[("chitchat", "realistic", "sdss")].values()))
    cell["selection"]["outcomes"] = {**cell["selection"]["outcomes"], "admitted": -1}
    rows, mismatched = composition(cells, {"chitchat": users}, feats, cfg)
    assert mismatched == [f"chitchat/realistic/sdss/{cell['user']}"]
    assert len(rows) == len(comp) - 1

    assert topic_match([{"topic": "a", "kind": "turn"}], [{"topic": "a"}, {"topic": "a"}]) == {"coverage": 1.0, "tv": 0.0}
    assert topic_match([{"topic": "low-value", "kind": "low_value"}], [{"topic": "a"}]) == {"coverage": 0.0, "tv": 1.0}


def test_a_second_draw_changes_only_the_policy_seed():
    import numpy as np

    from benchmarks.selection.cells import window_seed
    from benchmarks.selection.plan import DRAWS, ROWS

    # draw 0 keeps the seeds every committed cell was made with
    assert window_seed(3, 1) == int(np.random.SeedSequence([3, 1, 0x5E1]).generate_state(1)[0])
    assert len({window_seed(3, 1, d) for d in range(4)}) == 4
    for row, first in DRAWS.items():
        a, b = ROWS[row], ROWS[first]
        assert (a.kind, a.policy, a.params, a.synth_k) == (b.kind, b.policy, b.params, b.synth_k) and a.draw != b.draw
