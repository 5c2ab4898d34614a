"""What an output folder holds, as the files are: the decision log, dead letters, buffers, adapters.

`edgetune summary` and the end of `edgetune replay`/`run` print it; `edgetune adapters list`
prints a user's journaled training runs with :func:`pending_line`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def print_summary(out: Path, users: Sequence[str] | None = None, page: int = 1, page_size: int = 20,
                  examples: int = 3) -> None:
    """What an output folder holds, counted as the files are (see ``flows/outputs.py``), for every user.

    Users are listed ``page_size`` at a time (``page`` from 1), or only ``users``. Each user's
    kept examples are labelled with the lexicon domain the scorer assigned them, which is
    not the event's own ``meta.domain``.
    """
    from flows.outputs import dead_letter_key, first_per_key, read_decision_rows, read_jsonl_file

    if page < 1 or page_size < 1:
        raise ValueError(f"summary --page={page} --page-size={page_size}: both must be >= 1")
    decisions = read_decision_rows(out / "decisions")
    rows = decisions.rows
    dead = read_jsonl_file(out / "dead_letters.jsonl")
    letters = first_per_key(dead.records, dead_letter_key)  # one per payload: copies a restart wrote again go
    copies = f" ({decisions.n_rows} decision rows in the files)" if decisions.n_rows != len(rows) else ""
    again = len(dead.records) - len(letters)
    repeats = f" ({len(dead.records)} lines in the files, {again} written again after a restart)" if again else ""
    print(f"\nedgetune: {len(rows)} events decided{copies}, {len(letters)} dead letters{repeats}  (output: {out})")
    if dead.torn or dead.bad:
        print(f"  dead letters: {dead.torn} torn last line(s) (a write cut short by a stop) and {dead.bad} unreadable "
              "line(s), not counted above")
    if decisions.unreadable:
        print(f"  decisions: {len(decisions.unreadable)} unreadable part(s), not counted above: "
              + ", ".join(p.name for p in decisions.unreadable))
    if letters:
        print("dead letters: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(d.get("reason") for d in letters).items())))
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
        print("\nkept examples, highest EOE first; [lexicon domain: …] is the domain whose word list the scorer "
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
                  f"{number(e.probe_loss_before):>14}{number(e.probe_loss_after):>8}{number(e.general_loss_base):>14}{number(e.general_loss):>8}")


def number(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _snapshots(out: Path) -> dict[str, dict]:
    snaps = {}
    for p in sorted((out / "buffers").glob("*.json")):
        snap = json.loads(p.read_text(encoding="utf-8"))
        snaps[snap["user_id"]] = snap
    return snaps


def pending_line(request: dict, max_attempts: int) -> str:
    """One journaled training run as `adapters list` shows it: waiting, failed and retried, or failed for good.

    >>> pending_line({"window": 3, "samples": [{}, {}]}, 3).split(":")[0]
    'pending    window 3 (2 labeled samples)'
    >>> pending_line({"window": 3, "samples": [], "attempts": 3, "last_error": "RuntimeError: boom"}, 3).split(";")[0]
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
