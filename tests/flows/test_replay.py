"""File readers, bundled datasets, replay, rate limiting and the Bytewax replay source."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from flows.replay import RateLimiter, _iter_json_array, iter_dataset, iter_records, replay_events, throttle
from flows.replay_source import ReplaySource, replay_source
from operators.events import Event, parse_event
from operators.formats import DEFAULT_START_MS

DATA = Path(__file__).resolve().parents[1] / "data"
EVENTS = DATA / "events.jsonl"
N_EVENT_LINES = 38  # 30 valid events + 8 malformed lines


class FakeClock:
    """A monotonic clock that moves only when told to, or when something sleeps on it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- file readers -----------------------------------------------------------


def test_jsonl_lines_come_as_raw_bytes_even_when_malformed():
    items = list(iter_records(EVENTS))
    assert len(items) == N_EVENT_LINES
    assert all(isinstance(i, bytes) for i in items)
    assert items == EVENTS.read_bytes().splitlines()
    assert b'"prompt": "caf\xe9 au lait recipe?"' in items[25]  # invalid UTF-8 kept byte for byte


def test_jsonl_skips_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n   \n{"b": 2}')
    assert list(iter_records(path)) == [b'{"a": 1}', b'{"b": 2}']


def test_json_array_yields_dicts():
    records = list(iter_records(DATA / "alpaca.json"))
    assert len(records) == 10 and all(isinstance(r, dict) for r in records)
    assert records[3] == {"instruction": "What is the capital of Australia?", "input": "", "output": "Canberra."}


def test_truncated_json_array_keeps_every_whole_record_and_hands_on_the_tail():
    data = (DATA / "sharegpt.json").read_bytes()
    full = json.loads(data)
    # Every cut point, with chunks small enough that records straddle chunk boundaries.
    for cut in range(len(data) + 1):
        items = list(_iter_json_array(io.BytesIO(data[:cut]), chunk_bytes=16))
        records = [i for i in items if isinstance(i, dict)]
        tails = [i for i in items if isinstance(i, bytes)]
        assert records == full[: len(records)], cut
        assert len(tails) <= 1 and (not tails or items[-1] is tails[0]), cut
        if tails:
            assert data[:cut].rstrip().endswith(tails[0]), cut
            assert len(records) < len(full)
        else:
            # nothing undecodable left over: the cut fell between records, or before the array began
            before_cut = data[:cut].rstrip(b" \n,")
            assert len(records) == len(full) or before_cut in (b"", b"[") or before_cut.endswith(b"}"), cut


def test_json_array_element_with_invalid_utf8_goes_on_raw(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"instruction": "ok"}, {"instruction": "caf\xe9"}, 7, {"instruction": "ok2"}] junk')
    assert list(iter_records(path)) == [
        {"instruction": "ok"},
        b'{"instruction": "caf\xe9"}',
        b"7",  # not an object: raw, so the validator says not_an_object
        {"instruction": "ok2"},
        b"junk",
    ]


def test_json_suffix_holding_json_lines_is_read_as_lines(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"instruction": "a"}\n{"instruction": "b"}\n')
    assert list(iter_records(path)) == [b'{"instruction": "a"}', b'{"instruction": "b"}']


def test_unknown_suffix_and_format_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(ValueError, match="path=.*data.csv.*fmt="):
        list(iter_records(path))
    with pytest.raises(ValueError, match="fmt='csv'"):
        list(iter_records(path, fmt="csv"))


@pytest.fixture
def parquet_events(tmp_path) -> tuple[Path, list[dict]]:
    """Events written to Parquet by pyarrow; the file lives only in tmp_path."""
    events = [
        {"event_id": "p1", "user_id": "u1", "ts": 1000, "prompt": "hi", "response": "hello", "meta": {"topic": "greet"}},
        {"event_id": "p2", "user_id": "u2", "ts": 2000, "prompt": "unlabelled"},
        {"event_id": "p3", "user_id": "u1", "ts": 3000, "prompt": "bye", "response": "see you"},
    ]
    path = tmp_path / "events.parquet"
    # Two row groups, so reading crosses a batch boundary.
    pq.write_table(pa.Table.from_pylist(events), path, row_group_size=2)
    return path, events


def test_parquet_round_trip(parquet_events):
    path, events = parquet_events
    assert list(iter_records(path)) == events
    assert all(isinstance(e, Event) for e in map(parse_event, iter_records(path)))


def test_parquet_timestamps_become_epoch_ms(tmp_path):
    table = pa.table(
        {
            "event_id": ["t1"],
            "ts": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)], pa.timestamp("ms", tz="UTC")),
            "prompt": ["x"],
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    assert list(iter_records(path)) == [{"event_id": "t1", "ts": DEFAULT_START_MS, "prompt": "x"}]


# --- bundled datasets -------------------------------------------------------


@pytest.mark.parametrize("name", ["sharegpt", "chitchat"])
def test_bundled_dataset_gives_at_least_1000_events_with_prompts(name):
    items = list(replay_events(name, n_users=5, split="topic", limit=3000, seed=0))
    events = [i for i in items if isinstance(i, dict) and isinstance(i.get("prompt"), str) and i["prompt"].strip()]
    assert len(items) == 3000
    assert len(events) >= 1000
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["user_id"] for e in events} == {f"user-{k}" for k in range(5)}


def test_sharegpt_package_ends_in_one_truncated_tail():
    counts = Counter(type(r).__name__ for r in iter_dataset("sharegpt"))
    assert counts["bytes"] == 1  # the package's file is cut short mid-record
    assert counts["dict"] >= 1000


def test_chitchat_records_carry_their_conversation_id():
    first = next(iter_dataset("chitchat", limit=1))
    assert first["id"] == "a07edb12-6b91-4138-b11e-02421888d699"
    assert isinstance(first["messages"], list)


def test_iter_dataset_limit_and_unknown_name():
    assert len(list(iter_dataset("sharegpt", limit=3))) == 3
    with pytest.raises(ValueError, match="name='dolly'"):
        list(iter_dataset("dolly"))
    with pytest.raises(ValueError, match="limit=-1"):
        list(iter_dataset("sharegpt", limit=-1))


# --- replay -----------------------------------------------------------------


def test_replay_of_events_with_field_split_is_the_file_as_read():
    assert list(replay_events(EVENTS, split="field")) == EVENTS.read_bytes().splitlines()


def test_replay_of_events_with_a_new_split_keeps_bad_lines_raw():
    items = list(replay_events(EVENTS, n_users=2, split="round_robin", seed=0))
    assert len(items) == N_EVENT_LINES
    raw = [i for i in items if isinstance(i, bytes)]
    # not JSON, invalid UTF-8, and a JSON array: these cannot be re-assigned
    assert len(raw) == 3
    dicts = [i for i in items if isinstance(i, dict)]
    assert {d["user_id"] for d in dicts} == {"user-0", "user-1"}
    assert all("ts" in d for d in dicts if d["event_id"] != "bad-2")  # events keep their own ts


def test_replay_of_alpaca_stamps_the_replay_clock_and_splits_users():
    items = list(replay_events(DATA / "alpaca.json", n_users=3, split="round_robin", seed=0))
    assert [i["ts"] for i in items] == [DEFAULT_START_MS + 1000 * k for k in range(10)]
    # 10 events dealt over 3 users in turn: one user gets the 10th
    assert sorted(Counter(i["user_id"] for i in items).values()) == [3, 3, 4]


def test_replay_of_dolly_by_topic_gives_each_category_to_one_user():
    items = list(replay_events(DATA / "dolly.jsonl", n_users=3, split="topic", seed=0))
    assert len(items) == 10
    owners = defaultdict(set)
    for item in items:
        owners[item["meta"]["category"]].add(item["user_id"])
    assert all(len(users) == 1 for users in owners.values())


def test_replay_of_sharegpt_keeps_conversations_whole_and_is_deterministic():
    def run(seed: int) -> list[dict]:
        return list(replay_events(DATA / "sharegpt.json", n_users=2, split="topic", seed=seed))

    items = run(3)
    assert len(items) == 8
    owners = defaultdict(set)
    for item in items:
        owners[item["meta"]["conversation"]].add(item["user_id"])
    assert all(len(users) == 1 for users in owners.values())
    assert run(3) == items
    assert any(run(seed) != items for seed in range(10))


def test_every_replayed_sample_event_passes_the_validator():
    for name in ("alpaca.json", "dolly.jsonl", "sharegpt.json"):
        for item in replay_events(DATA / name, n_users=3, split="hash", seed=0):
            assert isinstance(parse_event(item), Event), (name, item)


def test_replay_passes_unmappable_records_on_for_dead_lettering(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "ok", "output": "yes"}, {"input": "no instruction", "output": "x"}]))
    items = list(replay_events(path, n_users=1, split="round_robin"))
    assert isinstance(parse_event(items[0]), Event)
    assert items[1]["input"] == "no instruction" and "prompt" not in items[1]
    assert parse_event(items[1]).reason == "missing_field"


def test_replay_limit_counts_items():
    assert len(list(replay_events(DATA / "sharegpt.json", n_users=2, limit=3))) == 3


# --- rate limiting ------------------------------------------------------------


def test_rate_limiter_schedule_follows_the_clock_not_the_last_send():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    assert limiter.available() == 1  # the first item is due at once
    limiter.consume(1)
    assert limiter.available() == 0 and limiter.delay() == pytest.approx(0.25)
    clock.now += 1.0  # a stall: items 1..4 are now all due
    assert limiter.available() == 4 and limiter.delay() == 0.0
    limiter.consume(4)
    assert limiter.delay() == pytest.approx(0.25)


def test_rate_limiter_wait_sleeps_only_the_missing_time():
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    assert list(throttle("abc", limiter)) == ["a", "b", "c"]
    assert clock.sleeps == pytest.approx([0.5, 0.5])


def test_rate_limiter_without_rate_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.wait()
    assert clock.sleeps == [] and limiter.delay() == 0.0


@pytest.mark.parametrize("rate", [0, -1.0, float("inf"), "10"])
def test_rate_limiter_rejects_bad_rates(rate):
    with pytest.raises(ValueError, match="rate_per_s="):
        RateLimiter(rate)


# --- the Bytewax source -------------------------------------------------------


def _run(source: ReplaySource) -> list:
    out: list = []
    flow = Dataflow("replay_test")
    records = op.input("read", flow, source)
    op.output("out", records, TestingSink(out))
    run_main(flow)
    return out


def test_replay_source_emits_every_record_once_in_order():
    expected = EVENTS.read_bytes().splitlines()
    assert _run(replay_source(EVENTS, split="field", batch_size=5)) == expected


def test_replay_source_partition_resumes_after_the_snapshot():
    source = ReplaySource(lambda: range(10), batch_size=4)
    part = source.build_part("read", "replay", None)
    assert part.next_batch() == [0, 1, 2, 3]
    assert part.snapshot() == 4
    resumed = source.build_part("read", "replay", part.snapshot())
    assert resumed.next_batch() == [4, 5, 6, 7]
    assert resumed.next_batch() == [8, 9]
    assert resumed.snapshot() == 10
    with pytest.raises(StopIteration):
        resumed.next_batch()


def test_replay_source_resumes_a_crashed_flow_from_its_snapshot(tmp_path):
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    out: list[int] = []
    armed = [True]

    def crash_once_at_25(x: int) -> int:
        if x == 25 and armed[0]:
            armed[0] = False
            raise RuntimeError("simulated crash")
        return x

    def build() -> Dataflow:
        flow = Dataflow("resume_test")
        records = op.input("read", flow, ReplaySource(lambda: range(40), batch_size=5))
        checked = op.map("check", records, crash_once_at_25)
        op.output("out", checked, TestingSink(out))
        return flow

    with pytest.raises(Exception):
        run_main(build(), epoch_interval=timedelta(0), recovery_config=recovery)
    first_run = len(out)
    run_main(build(), epoch_interval=timedelta(0), recovery_config=recovery)
    second = out[first_run:]
    assert set(out) == set(range(40))
    assert second[0] > 0 and len(second) < 40  # resumed, not restarted
    assert second == list(range(second[0], 40))


def test_rate_limited_partition_asks_to_be_woken_instead_of_sleeping():
    clock = FakeClock()
    source = ReplaySource(lambda: "abcdef", rate=2.0, batch_size=10, clock=clock)
    part = source.build_part("read", "replay", None)
    assert part.next_batch() == ["a"]
    before = datetime.now(timezone.utc)
    awake = part.next_awake()
    assert awake is not None and before < awake <= datetime.now(timezone.utc) + timedelta(seconds=0.5)
    assert part.next_batch() == []  # not due yet, and no sleeping
    clock.now += 1.0
    assert part.next_awake() is None  # two items are due now
    assert part.next_batch() == ["b", "c"]
    clock.now += 10.0
    assert part.next_batch() == ["d", "e", "f"]
    assert part.snapshot() == 6
    with pytest.raises(StopIteration):
        part.next_batch()


def test_rate_limited_source_runs_in_a_flow():
    assert _run(ReplaySource(lambda: range(5), rate=1000.0, batch_size=2)) == list(range(5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"rate": -5}, "rate_per_s=-5"),
        ({"records_factory": [1, 2]}, "records_factory="),
    ],
)
def test_replay_source_rejects_bad_config(kwargs, message):
    args = {"records_factory": lambda: [], **kwargs}
    with pytest.raises(ValueError, match=message):
        ReplaySource(**args)
