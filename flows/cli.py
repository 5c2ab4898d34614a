"""The ``edgetune`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import yaml

from operators.config import Settings, load_settings

log = logging.getLogger("edgetune")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (overrides EDGETUNE_* variables and --config)")
    g.add_argument("--config", type=Path, help="YAML file with settings (see `edgetune config`).")
    g.add_argument("--seed", type=int, dest="seed")
    g.add_argument("--policy", dest="buffer.policy", choices=["sdss", "random", "fifo", "reservoir", "kcenter"])
    g.add_argument("--capacity", type=int, dest="buffer.capacity", help="Buffer samples per user (default 64).")
    g.add_argument("--dup-threshold", type=float, dest="buffer.dup_threshold")
    g.add_argument("--embedder", dest="embed.kind", choices=["lm", "minilm"])
    g.add_argument("--max-tokens", type=int, dest="embed.max_tokens")
    g.add_argument("--batch-size", type=int, dest="embed.batch_size")
    g.add_argument("--model", dest="model.lm", help="'smollm2-135m-instruct' (default), 'tiny-random', or a local model dir.")
    g.add_argument("--lexicons", type=Path, dest="scoring.lexicons", help="Folder of <domain>.txt word lists.")
    g.add_argument("--out", type=Path, dest="output.dir", help="Output folder (default ./edgetune-out).")
    g.add_argument("--metrics-port", type=int, dest="metrics.port", help="Prometheus port on 127.0.0.1; 0 disables.")
    g.add_argument("--max-chars", type=int, dest="max_chars")
    g.add_argument("--workers", type=int, dest="workers")
    g.add_argument("--window", type=int, dest="train.window_events",
                   help="Train a user's adapter every N of their events (800; 0: no count windows).")
    g.add_argument("--window-seconds", type=float, dest="train.window_seconds",
                   help="Also train at the end of each event-time tumbling window of this many seconds (user's own ts).")
    g.add_argument("--no-train", action="store_false", dest="train.enabled", default=None, help="Select only; no LoRA training.")
    g.add_argument("--synth-k", type=int, dest="synth.k", help="Synthetic pairs per annotated sample (default 0: off; see the README's policy table).")
    g.add_argument("--torch-threads", type=int, dest="embed.torch_threads",
                   help="torch intra-op threads for everything torch does (embedding, generation, training).")


def _source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("replay source")
    g.add_argument("path", nargs="?", type=Path, help="File to replay; omit to use --dataset.")
    g.add_argument("--dataset", dest="source.dataset", choices=["sharegpt", "chitchat"], help="Bundled offline dataset (default sharegpt).")
    g.add_argument("--format", dest="source.format", choices=["auto", "jsonl", "json", "parquet"])
    g.add_argument("--users", type=int, dest="source.users", help="Split records without user ids into this many users.")
    g.add_argument("--split", dest="source.split", choices=["round_robin", "topic", "hash", "field"])
    g.add_argument("--limit", type=int, dest="source.limit", help="Replay at most this many records.")
    g.add_argument("--all", action="store_true", help="Replay the whole source (no limit).")
    g.add_argument("--rate", type=float, dest="source.rate", help="Events per second (default: as fast as possible).")
    g.add_argument("--heldout", type=float, dest="source.heldout", help="Fraction of labeled events kept out for `edgetune eval`.")
    g.add_argument("--answers", dest="annotation.replay_answers", choices=["oracle", "keep"],
                   help="oracle (default): withhold responses, the dataset's answer plays the user for buffered "
                        "samples only; keep: events carry their responses.")


def _kafka_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka")
    g.add_argument("--kafka", dest="kafka.brokers", metavar="BROKERS", help="Bootstrap servers, e.g. 127.0.0.1:9092.")
    g.add_argument("--events-topic", dest="kafka.events_topic")
    g.add_argument("--dead-letter-topic", dest="kafka.dead_letter_topic")
    g.add_argument("--starting", dest="kafka.starting", choices=["earliest", "latest"])
    g.add_argument("--idle-stop", type=float, dest="kafka.idle_stop_s", metavar="SECONDS", help="Stop after this long without new messages.")
    g.add_argument("--create-topics", action="store_true", help="Create the four edgetune topics if they are missing.")
    g.add_argument("--partitions", type=int, default=2, help="Partitions of topics made by --create-topics.")


def _run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--recovery-dir", type=Path, help="Bytewax recovery store: resume state and offsets from the last run.")
    g.add_argument("--epoch-seconds", type=float, default=10.0, help="Checkpoint interval when --recovery-dir is set.")
    g.add_argument("--no-progress", action="store_true", help="No progress bar.")


_STOP_EPILOG = ("SIGINT or SIGTERM stops cleanly: the batch in flight is finished, the decision log and buffer "
                "snapshots are written, queued training stays journaled, the summary is printed. Exit codes: 0 the "
                "input ended; 3 stopped by a signal (run the same command with the same --recovery-dir to continue); "
                "2 bad configuration; 1 an error. A second signal ends the process at once.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetune", description="On-device LLM personalization as a stream: select, annotate, synthesize, fine-tune.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="Print the effective configuration as YAML.")
    _common(p)
    _source_args(p)
    _kafka_args(p)

    p = sub.add_parser("replay", help="Replay a file or bundled dataset through the selection stream.",
                       epilog=_STOP_EPILOG)
    _common(p)
    _source_args(p)
    _run_args(p)

    p = sub.add_parser("run", help="Consume events from Kafka through the selection stream.", epilog=_STOP_EPILOG)
    _common(p)
    _kafka_args(p)
    _run_args(p)

    p = sub.add_parser("summary", help="Summarise an output folder (decision log, dead letters, buffers).")
    p.add_argument("out", type=Path, nargs="?", default=Path("edgetune-out"))
    p.add_argument("--user", action="append", help="Only this user (repeatable); default: every user, a page at a time.")
    p.add_argument("--page", type=int, default=1, help="Which page of users to show (from 1).")
    p.add_argument("--page-size", type=int, default=20, help="Users per page.")
    p.add_argument("--examples", type=int, default=3, help="Kept examples shown per user (0: none).")

    p = sub.add_parser("adapters", help="List a user's adapter versions or roll the latest back.")
    p.add_argument("action", choices=["list", "rollback"])
    p.add_argument("--user", help="User id (list: all users when omitted; rollback: required).")
    _common(p)

    p = sub.add_parser("generate", help="Answer a prompt with a user's latest adapter (the base model if none).")
    p.add_argument("prompt")
    p.add_argument("--user", help="User whose latest adapter answers; omit for the base model.")
    p.add_argument("--version", type=int, help="A specific adapter version instead of the latest.")
    p.add_argument("--max-new-tokens", type=int, default=128)
    _no_repeat(p)
    _common(p)

    p = sub.add_parser("eval", help="ROUGE-1 of the base model and each adapter version on users' held-out prompts.")
    p.add_argument("heldout", type=Path, help="JSONL of held-out events with user_id, prompt and reference response.")
    p.add_argument("--user", action="append", help="Only these users (repeatable).")
    p.add_argument("--max-new-tokens", type=int, default=128, help="128: ShareGPT's long references gain ~25 %% ROUGE-1 over 64.")
    _no_repeat(p)
    p.add_argument("--limit", type=int, help="At most this many prompts per user.")
    p.add_argument("--versions", choices=("all", "latest"), default="all",
                   help="Adapter versions to score against base: all (default) or only each user's latest, which "
                        "is what `edgetune generate` answers with (a long replay writes one version per window).")
    p.add_argument("--report", type=Path, help="Write the results as JSON here too.")
    _common(p)
    return parser


def _no_repeat(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-repeat-ngram-size", type=int, default=3, metavar="N",
                   help="Greedy decoding never repeats an N-gram (0: plain greedy, which often loops on one line "
                        "with this small model); see benchmarks/results/train_strength.")


_NOT_SETTINGS = {"command", "config", "verbose", "path", "all", "recovery_dir", "epoch_seconds", "no_progress", "out",
                 "create_topics", "partitions", "action", "user", "prompt", "version", "max_new_tokens", "heldout",
                 "no_repeat_ngram_size",
                 "limit", "report", "versions"}


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    if getattr(args, "path", None) is not None:
        overrides["source.path"] = args.path
    settings = load_settings(args.config, **overrides)
    if getattr(args, "all", False):  # None overrides are ignored, so "no limit" is set here
        settings = settings.model_copy(update={"source": settings.source.model_copy(update={"limit": None})})
    return settings


def _execute(flow: Any, settings: Settings, args: argparse.Namespace) -> None:
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    from operators.files import FILE_MODE, private_mkdir

    recovery = None
    if args.recovery_dir is not None:
        # The recovery store holds every user's state, prompts and responses included: private.
        private_mkdir(args.recovery_dir)
        if not any(args.recovery_dir.glob("*.sqlite3")):
            init_db_dir(args.recovery_dir, 1)
        for db in args.recovery_dir.glob("*.sqlite3*"):
            db.chmod(FILE_MODE)
        recovery = RecoveryConfig(str(args.recovery_dir))
    epoch = timedelta(seconds=args.epoch_seconds)
    cli_main(flow, workers_per_process=settings.workers, epoch_interval=epoch, recovery_config=recovery)


def _progress_bar(settings: Settings, args: argparse.Namespace, total: int | None):
    if args.no_progress or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="ev", desc="select", file=sys.stderr)
    return bar, lambda: bar.update(1)


def cmd_stream(args: argparse.Namespace) -> int:
    """Run the replay or Kafka stream; 0 at the end of input, ``flows.stop.EXIT_STOPPED`` (3) after SIGINT/SIGTERM."""
    from flows import stop
    from flows.selection import build_components
    from operators import metrics
    from operators.files import private_mkdir

    stop.install_handlers()
    settings = settings_from_args(args)
    private_mkdir(settings.output.dir)
    metrics.serve(settings.metrics.port, settings.metrics.addr)
    log.info("loading model %s (embedder %s)", settings.model.lm, settings.embed.kind)
    components = build_components(settings)
    if args.command == "replay":
        from flows.replay_flow import build_flow, write_heldout

        total = settings.source.limit
        if settings.source.heldout > 0:
            log.info("held out %d labeled events for evaluation", write_heldout(settings))
    else:
        from flows.kafka import ensure_topics
        from flows.kafka_flow import build_flow

        k = settings.kafka
        brokers = tuple(b.strip() for b in k.brokers.split(",") if b.strip())
        if args.create_topics:
            topics = (k.events_topic, k.annotations_topic, k.dead_letter_topic, k.requests_topic)
            ensure_topics(brokers, {t: args.partitions for t in topics})
        total = None
    from flows.trainer import trainer_for

    bar, progress = _progress_bar(settings, args, total)
    trainer = trainer_for(settings, components)
    flow = build_flow(settings, components, progress, trainer)
    try:
        _execute(flow, settings, args)
    finally:
        if bar is not None:
            bar.close()
        if trainer is not None:
            trainer.service.close()
    print_summary(settings.output.dir)
    if trainer is not None:
        print_adapters(settings.adapters_dir)
    if stop.stopping():
        print(f"\nedgetune: stopped by a signal after flushing; exit code {stop.EXIT_STOPPED}. "
              "Run the same command (same --recovery-dir) to continue.")
        return stop.EXIT_STOPPED
    return 0


def print_summary(out: Path, users: Sequence[str] | None = None, page: int = 1, page_size: int = 20,
                  examples: int = 3) -> None:
    """What an output folder holds, counted as the files are (see ``flows/outputs.py``), for every user.

    Users are listed ``page_size`` at a time (``page`` from 1), or only ``users``. Each user's
    kept examples are labelled with the lexicon domain the scorer assigned them, which is
    not the event's own ``meta.domain``.
    """
    from flows.outputs import read_decision_rows, read_jsonl_file

    if page < 1 or page_size < 1:
        raise ValueError(f"summary --page={page} --page-size={page_size}: both must be >= 1")
    decisions = read_decision_rows(out / "decisions")
    rows = decisions.rows
    dead = read_jsonl_file(out / "dead_letters.jsonl")
    copies = f" ({decisions.n_rows} decision rows in the files)" if decisions.n_rows != len(rows) else ""
    repeats = f" ({dead.distinct} distinct lines)" if dead.distinct != len(dead.records) else ""
    print(f"\nedgetune: {len(rows)} events decided{copies}, {len(dead.records)} dead letters{repeats}  (output: {out})")
    if dead.torn or dead.bad:
        print(f"  dead letters: {dead.torn} torn last line(s) (a write cut short by a stop) and {dead.bad} unreadable "
              "line(s), not counted above")
    if decisions.unreadable:
        print(f"  decisions: {len(decisions.unreadable)} unreadable part(s), not counted above: "
              + ", ".join(p.name for p in decisions.unreadable))
    if dead.records:
        print("dead letters: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(d.get("reason") for d in dead.records).items())))
    snapshots = _snapshots(out)
    if not rows and not snapshots:
        return
    if rows:
        print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["outcome"] for r in rows).items())))
        n = len(rows)
        for name in ("embed_seconds", "score_seconds", "select_seconds"):
            print(f"  mean {name:<15} {sum(r[name] for r in rows) / n * 1000:9.3f} ms/event")
    by_user: dict[str, list[dict]] = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append(r)
    everyone = sorted(set(by_user) | set(snapshots))
    if users:
        missing = [u for u in users if u not in everyone]
        if missing:
            print(f"no decisions or buffer for user(s) {', '.join(missing)} in {out}")
        shown = [u for u in everyone if u in set(users)]
        print(f"\nusers: {len(shown)} of {len(everyone)} (--user)")
    else:
        first = (page - 1) * page_size
        shown = everyone[first:first + page_size]
        more = f"; next: --page {page + 1}" if first + page_size < len(everyone) else ""
        span = f"{first + 1}-{first + len(shown)}" if shown else "none"
        print(f"\nusers: {len(everyone)} (showing {span}, {page_size} per page{more})")
    if not shown:
        return
    print(f"{'user':<16}{'events':>8}{'buffer':>8}{'replaced':>10}{'dupes':>7}  top lexicon domains in buffer")
    for user in shown:
        outc = Counter(r["outcome"] for r in by_user.get(user, []))
        samples = snapshots.get(user, {}).get("samples", [])
        doms = Counter(s["domain"] for s in samples).most_common(3)
        print(f"{user:<16}{len(by_user.get(user, [])):>8}{len(samples):>8}{outc['replaced']:>10}{outc['duplicate']:>7}  "
              + ", ".join(f"{d} {c}" for d, c in doms))
    if examples > 0 and any(snapshots.get(u, {}).get("samples") for u in shown):
        print(f"\nkept examples, highest EOE first; [lexicon domain: …] is the domain whose word list the scorer "
              "matched, not the event's own meta.domain")
    for user in shown if examples > 0 else []:
        samples = snapshots.get(user, {}).get("samples", [])
        if not samples:
            continue
        print(f"examples kept for {user}:")
        for sample in sorted(samples, key=lambda x: -x["eoe"])[:examples]:
            text = " ".join(sample["prompt"].split())
            print(f"  [lexicon domain: {sample['domain']}] {text[:100]}{'…' if len(text) > 100 else ''}")


def print_adapters(root: Path) -> None:
    from flows.trainer import PENDING_DIR
    from models.adapters import AdapterStore
    from operators.pending import PendingRuns

    store = AdapterStore(root)
    users = store.users()
    failed = [r for r in PendingRuns(root / PENDING_DIR).pending() if r.get("attempts")]
    for r in failed:
        print(f"\ntraining for user {r['user_id']}, window {r.get('window')} failed {r['attempts']} time(s), last: "
              f"{r.get('last_error')}; kept in {root / PENDING_DIR} (see `edgetune adapters list`)")
    if not users:
        print("\nno adapters trained (no window closed with labeled samples)")
        return
    print(f"\nadapters ({root}):")
    print(f"{'user':<16}{'version':>8}  {'status':<11}{'real':>5}{'synth':>6}{'probe before':>14}{'after':>8}{'general base':>14}{'after':>8}")
    for user in users:
        for m in store.list(user):
            e = m.evaluation
            print(f"{user:<16}{'v' + str(m.version):>8}  {m.status:<11}{m.n_real:>5}{m.n_synthetic:>6}"
                  f"{_num(e.probe_loss_before):>14}{_num(e.probe_loss_after):>8}{_num(e.general_loss_base):>14}{_num(e.general_loss):>8}")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _snapshots(out: Path) -> dict[str, dict]:
    snaps = {}
    for p in sorted((out / "buffers").glob("*.json")):
        snap = json.loads(p.read_text(encoding="utf-8"))
        snaps[snap["user_id"]] = snap
    return snaps


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    print(yaml.safe_dump(json.loads(settings.model_dump_json()), sort_keys=False), end="")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from models.adapters import AdapterStore

    settings = settings_from_args(args)
    store = AdapterStore(settings.adapters_dir)
    if args.action == "rollback":
        if not args.user:
            raise ValueError("adapters rollback needs --user USER")
        target = store.rollback(args.user)
        print(f"{args.user}: latest is now {'v' + str(target) if target is not None else 'the base model'}")
        return 0
    from flows.trainer import PENDING_DIR
    from operators.pending import PendingRuns

    pending = {r["user_id"]: r for r in PendingRuns(settings.adapters_dir / PENDING_DIR).pending()}
    users = [args.user] if args.user else sorted(set(store.users()) | set(pending))
    if not users:
        print(f"no adapters under {settings.adapters_dir}")
    for user in users:
        latest = store.latest(user)
        print(f"{user}  (latest: {'v' + str(latest) if latest is not None else 'base model'})")
        for m in store.list(user):
            e = m.evaluation
            integrity = store.integrity(user, m.version)
            print(f"  v{m.version:<4} {m.status:<11} {m.created_at}  real {m.n_real:>3} synth {m.n_synthetic:>3}  "
                  f"probe {_num(e.probe_loss_before)} -> {_num(e.probe_loss_after)}  general {_num(e.general_loss_base)} -> {_num(e.general_loss)}"
                  f"  weights {integrity.split(':')[0]}  {m.status_reason}")
            if integrity.startswith("REFUSED"):
                print(f"         {integrity}")
        if user in pending:
            print("  " + _pending_line(pending[user], settings.train.retry_attempts))
    return 0


def _pending_line(request: dict, max_attempts: int) -> str:
    """One journaled training run as `adapters list` shows it: waiting, failed and retried, or failed for good.

    >>> _pending_line({"window": 3, "samples": [{}, {}]}, 3).split(":")[0]
    'pending    window 3 (2 labeled samples)'
    >>> _pending_line({"window": 3, "samples": [], "attempts": 3, "last_error": "RuntimeError: boom"}, 3).split(";")[0]
    'failed     window 3 (0 labeled samples): failed 3 of 3 attempts, last: RuntimeError: boom'
    """
    head = f"window {request.get('window')} ({len(request.get('samples', []))} labeled samples)"
    attempts = int(request.get("attempts", 0))
    if attempts >= max_attempts:
        return (f"failed     {head}: failed {attempts} of {max_attempts} attempts, last: {request.get('last_error')}; "
                "not retried until the user's next window replaces it")
    if attempts:
        return (f"pending    {head}: failed {attempts} of {max_attempts} attempts, last: {request.get('last_error')}; "
                "retried after a backoff, or first at the next `run` or `replay`")
    return (f"pending    {head}: waiting or training now, or left by a stopped process, in which case the next "
            "`run` or `replay` trains it first")


def _model_for(settings: Settings, user: str | None, version: int | None):
    """The base model, wrapped with the user's chosen adapter when there is one."""
    from flows.selection import load_model
    from models.adapters import AdapterStore, load_adapter

    model, tokenizer = load_model(settings)
    if user is None:
        return model, tokenizer, "base model"
    store = AdapterStore(settings.adapters_dir)
    chosen = version if version is not None else store.latest(user)
    if chosen is None:
        return model, tokenizer, "base model (no adapter for this user)"
    return load_adapter(model, store.path(user, chosen)), tokenizer, f"adapter v{chosen} of {user}"


def cmd_generate(args: argparse.Namespace) -> int:
    from models.generate import GenerateConfig, generate

    settings = settings_from_args(args)
    model, tokenizer, which = _model_for(settings, args.user, args.version)
    answer = generate(model, tokenizer, [args.prompt], GenerateConfig(max_new_tokens=args.max_new_tokens,
                                                                      no_repeat_ngram_size=args.no_repeat_ngram_size))[0]
    print(f"[{which}]", file=sys.stderr)
    print(answer)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models.adapters import AdapterStore, load_adapter
    from models.evaluate import evaluate, paired_difference
    from models.generate import GenerateConfig
    from flows.selection import load_model
    from models.train import example_losses
    from operators.events import Event, parse_event
    from operators.files import atomic_write

    settings = settings_from_args(args)
    pairs: dict[str, list[tuple[str, str]]] = {}
    skipped: Counter[str] = Counter()
    for line in args.heldout.read_bytes().splitlines():
        if not line.strip():
            continue
        ev = parse_event(line, max_chars=settings.max_chars, control_chars=settings.source.control_chars)
        if not isinstance(ev, Event) or ev.response is None:
            skipped[ev.reason if not isinstance(ev, Event) else "no_response"] += 1
        elif not args.user or ev.user_id in args.user:
            pairs.setdefault(ev.user_id, []).append((ev.prompt, ev.response))
    if skipped:
        print(f"edgetune eval: skipped {sum(skipped.values())} held-out lines: "
              + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())), file=sys.stderr)
    if not pairs:
        raise ValueError(f"{args.heldout}: no labeled held-out events (need user_id, prompt and response)")
    gen = GenerateConfig(max_new_tokens=args.max_new_tokens, no_repeat_ngram_size=args.no_repeat_ngram_size)
    model, tokenizer = load_model(settings)
    store = AdapterStore(settings.adapters_dir)
    results = []
    print(f"{'user':<16}{'model':<8}{'status':<11}{'n':>4}{'ROUGE-1':>9}  {'vs base [95% CI]':<26}{'win/loss':>9}"
          f"{'answer loss':>12}  {'vs base [95% CI]':<26}")
    for user, user_pairs in sorted(pairs.items()):
        user_pairs = user_pairs[: args.limit] if args.limit else user_pairs
        base = evaluate(model, tokenizer, user_pairs, gen)
        base_losses = example_losses(model, tokenizer, user_pairs, settings.train.max_seq_len)
        base_loss = statistics.fmean(base_losses)
        results.append({"user_id": user, "model": "base", "status": "-", "decoding": dataclasses.asdict(gen),
                        "n": base.n, "rouge1": base.rouge1_mean,
                        "answer_loss": base_loss, "predictions": base.predictions})
        print(f"{user:<16}{'base':<8}{'-':<11}{base.n:>4}{base.rouge1_mean:>9.4f}  {'':<26}{'':>9}{base_loss:>12.4f}")
        latest = store.latest(user)
        for m in store.list(user):
            if args.versions == "latest" and m.version != latest:
                continue
            wrapped = load_adapter(model, store.path(user, m.version))
            try:
                r = evaluate(wrapped, tokenizer, user_pairs, gen)
                losses = example_losses(wrapped, tokenizer, user_pairs, settings.train.max_seq_len)
            finally:
                wrapped.unload()
            loss = statistics.fmean(losses)
            d = paired_difference(r.scores, base.scores, seed=settings.seed)
            dl = paired_difference(losses, base_losses, seed=settings.seed)  # negative = lower loss = better
            status = m.status + ("*" if m.version == latest else "")
            results.append({"user_id": user, "model": f"v{m.version}", "status": m.status, "latest": m.version == latest,
                            "n": r.n, "rouge1": r.rouge1_mean, "answer_loss": loss, "predictions": r.predictions,
                            "vs_base": {"mean": d.mean, "ci95": [d.low, d.high], "wins": d.wins, "losses": d.losses,
                                        "significant": d.significant},
                            "loss_vs_base": {"mean": dl.mean, "ci95": [dl.low, dl.high], "lower": dl.losses,
                                             "higher": dl.wins, "significant": dl.significant}})
            interval = f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
            loss_interval = f"{dl.mean:+.4f} [{dl.low:+.4f}, {dl.high:+.4f}]"
            print(f"{user:<16}{'v' + str(m.version):<8}{status:<11}{r.n:>4}{r.rouge1_mean:>9.4f}  {interval:<26}"
                  f"{f'{d.wins}/{d.losses}':>9}{loss:>12.4f}  {loss_interval:<26}")
    print("\n* = the user's latest (what `edgetune generate` answers with). vs base: mean per-prompt difference "
          "(ROUGE-1: higher is better; answer loss, nats/token of the reference answer: lower is better) with a "
          "bootstrap 95% interval over prompts; a difference is measurable only if its interval excludes 0.")
    if args.report:
        atomic_write(args.report, json.dumps(results, indent=1).encode())  # 0600: predictions are user text
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "config":
            return cmd_config(args)
        if args.command in ("replay", "run"):
            return cmd_stream(args)
        if args.command == "summary":
            print_summary(args.out, args.user, args.page, args.page_size, args.examples)
            return 0
        if args.command == "adapters":
            return cmd_adapters(args)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "eval":
            return cmd_eval(args)
    except ValueError as exc:
        print(f"edgetune: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
