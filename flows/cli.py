"""The ``edgetune`` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import yaml

from flows.summary import number, pending_line, print_adapters, print_summary
from flows.options import COMMON, NONE, add_settings, overrides
from operators.config import Settings, load_settings

log = logging.getLogger("edgetune")


def _kafka_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka administration")
    g.add_argument("--create-topics", action="store_true", help="Create the four edgetune topics if they are missing.")
    g.add_argument("--partitions", type=int, default=2, help="Partitions of topics made by --create-topics.")


def _config_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML file with settings (see `edgetune config`).")


def _run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--recovery-dir", type=Path, help="Bytewax recovery store: resume state and offsets from the last run.")
    g.add_argument("--epoch-seconds", type=float, default=10.0, help="Checkpoint interval when --recovery-dir is set.")
    g.add_argument("--no-progress", action="store_true", help="No progress display on stderr (stage, events/s, "
                   "training steps, ETA; periodic lines when stderr is not a terminal).")


_STOP_EPILOG = ("SIGINT or SIGTERM stops cleanly: the batch in flight is finished, the decision log and buffer "
                "snapshots are written, a training run in progress finishes and the queued ones stay journaled in "
                "<adapters>/.pending/ for the next start (only the end of the input trains the whole queue), the "
                "summary is printed. Exit codes: 0 the "
                "input ended; 3 stopped by a signal (run the same command with the same --recovery-dir to continue); "
                "2 bad configuration; 1 an error. A second signal ends the process at once.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetune", description="On-device LLM personalization as a stream: select, annotate, synthesize, fine-tune.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)
    # Every settings flag is generated from the settings tree (flows/options.py).

    p = sub.add_parser("config", help="Print the effective configuration as YAML.")
    _config_file(p)
    add_settings(p, (*COMMON, "source", "kafka", "generate", "serve"))
    p.add_argument("--all", action="store_true", help="Replay the whole source (same as --limit none).")

    p = sub.add_parser("replay", help="Replay a file or bundled dataset through the selection stream.",
                       epilog=_STOP_EPILOG)
    _config_file(p)
    add_settings(p, (*COMMON, "source"))
    p.add_argument("--all", action="store_true", help="Replay the whole source (same as --limit none).")
    _run_args(p)

    p = sub.add_parser("run", help="Consume events from Kafka through the selection stream.", epilog=_STOP_EPILOG)
    _config_file(p)
    add_settings(p, (*COMMON, "kafka"))
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
    _config_file(p)
    add_settings(p, COMMON)

    p = sub.add_parser("generate", help="Answer a prompt with a user's latest adapter (the base model if none).")
    p.add_argument("prompt")
    p.add_argument("--user", help="User whose latest adapter answers; omit for the base model.")
    p.add_argument("--version", type=int, help="A specific adapter version instead of the latest.")
    _config_file(p)
    add_settings(p, (*COMMON, "generate"))

    p = sub.add_parser("eval", help="ROUGE-1 of the base model and each adapter version on users' held-out prompts.")
    p.add_argument("heldout", type=Path, help="JSONL of held-out events with user_id, prompt and reference response.")
    p.add_argument("--user", action="append", help="Only these users (repeatable).")
    p.add_argument("--limit", type=int, help="At most this many prompts per user.")
    p.add_argument("--versions", choices=("all", "latest"), default="all",
                   help="Adapter versions to score against base: all (default) or only each user's latest, which "
                        "is what `edgetune generate` answers with (a long replay writes one version per window).")
    p.add_argument("--report", type=Path, help="Write the results as JSON here too.")
    _config_file(p)
    add_settings(p, (*COMMON, "generate"))
    _forget_parser(sub)

    p = sub.add_parser("serve", help="Answer users over HTTP (OpenAI chat completions) with their latest adapters; "
                       "served turns and feedback flow back into the stream.", epilog=_STOP_EPILOG)
    _config_file(p)
    add_settings(p, (*COMMON, "kafka", "generate", "serve"))
    p.add_argument("--print-user-token", metavar="USER", help="Print USER's bearer token (derived from serve.token) "
                   "and exit: it lets a client act as that user only.")
    _run_args(p)
    return parser


def _forget_parser(sub: Any) -> None:
    p = sub.add_parser("forget", help="Delete everything kept of one user: buffer, decision rows, dead letters, "
                       "annotation requests, held-out rows, pending training, adapters, recovery state.",
                       epilog="Refused while another process has files open in these folders (Linux). Kafka topics "
                              "keep the raw events until their retention deletes them (see the README).")
    p.add_argument("--user", required=True, help="The user id, exactly as in the events.")
    p.add_argument("--out", type=Path, dest="output.dir", metavar="DIR", help="Output folder (default ./edgetune-out).")
    p.add_argument("--recovery-dir", type=Path, metavar="DIR", help="The run's Bytewax recovery store, if it had one.")
    p.add_argument("--config", type=Path, help="YAML settings (for train.adapters_dir, if set there).")


def cmd_forget(args: argparse.Namespace) -> int:
    from flows.forget import forget_user

    settings = settings_from_args(args)
    done = forget_user(args.user, settings.output.dir, settings.adapters_dir, args.recovery_dir, settings.spool_dir)
    print(f"edgetune forget: user {args.user!r}, deleted from {settings.output.dir}"
          + (f" and {args.recovery_dir}" if args.recovery_dir else "") + ":")
    for line in done.lines():
        print("  " + line)
    print("Kafka topics still hold this user's raw events (and the dead letters and annotation requests edgetune "
          "wrote there) until the topics' retention deletes them: see the README's privacy section.")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows import serve

    settings = settings_from_args(args)
    if args.print_user_token:
        if settings.serve.token is None:
            raise ValueError("--print-user-token needs serve.token (EDGETUNE_SERVE__TOKEN): user tokens derive from it")
        print(serve.user_token(settings.serve.token.get_secret_value(), args.print_user_token))
        return 0
    return serve.run(settings, args)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = overrides(args)
    if getattr(args, "all", False):
        given["source.limit"] = NONE
    return load_settings(getattr(args, "config", None), to_none=tuple(k for k, v in given.items() if v is NONE),
                         **{k: v for k, v in given.items() if v is not NONE})


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


def _progress_bar(settings: Settings, args: argparse.Namespace):
    """The stderr progress display (``flows/progress.py``): redrawn on a terminal, periodic lines otherwise."""
    if args.no_progress:
        return None
    from flows.progress import Progress

    total = settings.source.limit if args.command == "replay" else None
    return Progress(total=total, ticker=True)


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
    bar = _progress_bar(settings, args)
    if bar is not None:
        bar.stage("load")
    log.info("loading model %s (embedder %s)", settings.model.lm, settings.embed.kind)
    components = build_components(settings)
    if args.command == "replay":
        from flows.replay_flow import build_flow, write_heldout

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
    from flows.trainer import finish as finish_training
    from flows.trainer import trainer_for
    from models.train import watch_steps

    trainer = trainer_for(settings, components)
    flow = build_flow(settings, components, bar.event if bar is not None else None, trainer)
    try:
        with watch_steps(bar.train_step) if bar is not None else contextlib.nullcontext():
            if bar is not None:
                bar.stage("select")
            _execute(flow, settings, args)
    except Exception:
        _hold_exporter_after_offset_loss(settings, stop)
        raise
    finally:
        if bar is not None:
            bar.close()
        if trainer is not None:  # a stop leaves the queue journaled; the end of the input trains it
            finish_training(trainer.service)
    print_summary(settings.output.dir)
    if trainer is not None:
        print_adapters(settings.adapters_dir)
    if stop.stopping():
        print(f"\nedgetune: stopped by a signal after flushing; exit code {stop.EXIT_STOPPED}. "
              "Run the same command (same --recovery-dir) to continue.")
        return stop.EXIT_STOPPED
    return 0


def _hold_exporter_after_offset_loss(settings: Any, stop: Any) -> None:
    """After a run failed on a lost Kafka offset, serve the count for ``metrics.exit_grace_seconds`` (a signal ends it).

    The loss is counted right before the run stops, often before any scrape; without the
    wait, Prometheus would never see it and EdgetuneKafkaOffsetLost could not fire.
    """
    from operators import metrics

    grace = settings.metrics.exit_grace_seconds
    if not (settings.metrics.port and grace > 0 and metrics.offset_loss_failed()):
        return
    log.error("stopped on a lost Kafka offset; the metrics exporter stays up %.0f s for Prometheus "
              "(metrics.exit_grace_seconds; a signal ends the wait)", grace)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not stop.stopping():
        time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))


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
                  f"probe {number(e.probe_loss_before)} -> {number(e.probe_loss_after)}  general {number(e.general_loss_base)} -> {number(e.general_loss)}"
                  f"  weights {integrity.split(':')[0]}  {m.status_reason}")
            if integrity.startswith("REFUSED"):
                print(f"         {integrity}")
        if user in pending:
            print("  " + pending_line(pending[user], settings.train.retry_attempts))
    return 0


def _model_for(settings: Settings, user: str | None, version: int | None):
    """The base model, wrapped with the user's chosen adapter when there is one."""
    from models.configure import load_model
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
    from models.configure import generate_config
    from models.generate import generate

    settings = settings_from_args(args)
    model, tokenizer, which = _model_for(settings, args.user, args.version)
    answer = generate(model, tokenizer, [args.prompt], generate_config(settings))[0]
    print(f"[{which}]", file=sys.stderr)
    print(answer)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models.adapters import AdapterStore, load_adapter
    from models.evaluate import evaluate, paired_difference
    from models.configure import generate_config, load_model
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
    gen = generate_config(settings)
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
        if args.command == "forget":
            return cmd_forget(args)
        if args.command == "serve":
            return cmd_serve(args)
    except ValueError as exc:
        print(f"edgetune: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
