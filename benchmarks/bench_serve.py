"""`edgetune serve` against `edgetune generate`: time to first token, tokens/s, and the cost of an adapter switch.

A real `edgetune serve` process (the real SmolLM2-135M-Instruct, greedy decoding, served
turns to the local spool) is asked through the official ``openai`` client, streaming, so the
first content chunk marks the time to first token (TTFT, measured at the client: it includes
HTTP, the queue and the prompt's prefill). Sections:

- ``generate``: `edgetune generate PROMPT` once per prompt, as a user would run it today: one
  process per answer, loading the model each time. Its wall time is its time to the (whole)
  answer; the answers must be the same text as the server's (same template, same decoding).
- ``serve, 1 user``: the same prompts, one request at a time.
- ``serve, 4 users``: the same prompts shared by 4 concurrent users (threads), 4 requests in
  flight: one generation worker answers them in turn, so TTFT includes the wait in the queue.
- ``switch``: short answers (``--switch-tokens``) from users with their own promoted adapter
  (real peft LoRA adapters on the real model, random B so they change the answers): one user
  repeatedly (no switch) against two users alternating (a switch before every answer), with
  both resident (``serve.max_resident`` 4), and again with ``serve.max_resident`` 1, so every
  switch loads the adapter from disk (verify files, load, check it moves the logits). The
  server's own switch time is read from its metrics (``edgetune_serve_adapter_switch_seconds``).

    python benchmarks/bench_serve.py              # 8 prompts, 64 new tokens
    python benchmarks/bench_serve.py --quick      # tiny random model, 2 prompts: smoke run into results/quick/
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, LoadGate, base_parser, header, write_results  # noqa: E402

PROMPTS = [
    "How often should I water a cactus in winter?",
    "Give me one tip for a better sourdough crust.",
    "What is a good first houseplant for a dark flat?",
    "How do I fix a flaky unit test?",
    "Explain what a bearer token is in two sentences.",
    "What should I pack for a rainy weekend hike?",
    "How can I make my morning coffee less bitter?",
    "Suggest a name for a small grey cat.",
]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """A real `edgetune serve` subprocess on free loopback ports."""

    def __init__(self, model: str, out: Path, max_tokens: int, max_resident: int = 4):
        self.metrics_port = _free_port()
        self.log = out / f"serve-{max_resident}.log"
        cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", model, "--out", str(out), "--port", "0",
               "--metrics-port", str(self.metrics_port), "--max-new-tokens", str(max_tokens),
               "--serve.max-queue", "8", "--serve.max-resident", str(max_resident), "--no-progress"]
        out.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=sink, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not (m := re.search(r"edgetune serve: (http://127\.0\.0\.1:\d+/v1)", self.log.read_text())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"edgetune serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.url = m.group(1)

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
                   or line.startswith(name + "{"))

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ask(client: Any, model: str, user: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One streamed answer: TTFT, total seconds, completion tokens, decode tokens/s, the text."""
    start = time.perf_counter()
    first = None
    parts: list[str] = []
    usage = None
    version = "?"
    stream = client.chat.completions.create(model=model, user=user, stream=True, max_tokens=max_tokens,
                                            messages=[{"role": "user", "content": prompt}])
    for chunk in stream:
        version = chunk.model_extra.get("adapter_version", version)
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - start
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - start
    tokens = usage.completion_tokens if usage is not None else 0
    decode = (tokens - 1) / (total - first) if first is not None and tokens > 1 and total > first else None
    return {"user": user, "ttft_s": first, "total_s": total, "tokens": tokens, "decode_tok_s": decode,
            "text": "".join(parts), "adapter_version": version}


def summarize(label: str, answers: list[dict[str, Any]], wall: float, **extra: Any) -> dict[str, Any]:
    ttft = [a["ttft_s"] for a in answers if a["ttft_s"] is not None]
    decode = [a["decode_tok_s"] for a in answers if a["decode_tok_s"] is not None]
    tokens = sum(a["tokens"] for a in answers)
    return {"section": label, "answers": len(answers), "ttft_median_s": statistics.median(ttft) if ttft else None,
            "ttft_max_s": max(ttft) if ttft else None,
            "answer_median_s": statistics.median(a["total_s"] for a in answers),
            "decode_tok_s_median": statistics.median(decode) if decode else None,
            "tokens": tokens, "wall_s": wall, "throughput_tok_s": tokens / wall, **extra}


def run_generate(model: str, prompts: list[str], max_tokens: int, out: Path, tokenizer: Any) -> tuple[dict, list[str]]:
    answers, rows = [], []
    start_all = time.perf_counter()
    for prompt in prompts:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "flows.cli", "generate", prompt, "--model", model,
                               "--out", str(out), "--max-new-tokens", str(max_tokens)], cwd=REPO, env=ENV,
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        text = done.stdout.rstrip("\n")
        answers.append(text)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        rows.append({"ttft_s": wall, "total_s": wall, "tokens": n, "decode_tok_s": None})
    wall = time.perf_counter() - start_all
    row = summarize("edgetune generate (one process per prompt)", rows, wall,
                    note="time to first token = time to the whole answer (no streaming; includes loading the model)")
    return row, answers


def make_adapters(model_name: str, out: Path, users: list[str]) -> None:
    """A promoted LoRA adapter for each user, on the real base model (random B: it changes the answers)."""
    from models.adapters import AdapterStore
    from models.configure import load_model
    from operators.config import Settings
    from tests.serve.helpers import make_adapter, save_promoted

    settings = Settings(model={"lm": model_name}, output={"dir": str(out)})
    model, _ = load_model(settings)
    store = AdapterStore(settings.adapters_dir)
    for seed, user in enumerate(users, start=1):
        save_promoted(store, user, make_adapter(model, seed, scale=0.02), base=model_name)


def switch_phase(server: Serve, model: str, prompts: list[str], tokens: int, rounds: int, label: str) -> list[dict]:
    import openai

    client = openai.OpenAI(base_url=server.url, api_key="unused-on-loopback", max_retries=0, timeout=600)
    ask(client, model, "ua", prompts[0], tokens)  # warm: load ua's adapter (and ub's below)
    ask(client, model, "ub", prompts[0], tokens)
    rows = []
    for pattern, users in (("one user (no switch)", ["ua"] * rounds), ("two users alternating", ["ua", "ub"] * (rounds // 2))):
        before_sum = server.metric("edgetune_serve_adapter_switch_seconds_sum")
        before_n = server.metric("edgetune_serve_adapter_switch_seconds_count")
        loads = server.metric("edgetune_serve_adapter_loads_total")
        start = time.perf_counter()
        answers = [ask(client, model, u, prompts[i % len(prompts)], tokens) for i, u in enumerate(users)]
        wall = time.perf_counter() - start
        assert all(a["adapter_version"] == 1 for a in answers), [a["adapter_version"] for a in answers]
        n = server.metric("edgetune_serve_adapter_switch_seconds_count") - before_n
        switch = (server.metric("edgetune_serve_adapter_switch_seconds_sum") - before_sum) / n
        rows.append(summarize(f"{label}: {pattern}", answers, wall, server_switch_mean_s=switch,
                              adapter_loads=server.metric("edgetune_serve_adapter_loads_total") - loads))
    return rows


def main() -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per answer")
    parser.add_argument("--switch-tokens", type=int, default=8, help="new tokens per answer in the switch section")
    parser.add_argument("--switch-rounds", type=int, default=8, help="answers per switch pattern")
    args = parser.parse_args()
    import openai

    model = "tiny-random" if args.quick else "smollm2-135m-instruct"
    prompts = PROMPTS[:2] if args.quick else PROMPTS
    rounds = 4 if args.quick else args.switch_rounds
    gate = LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    head = header("bench_serve", args.quick, extra={"model": model, "prompts": len(prompts),
                                                    "max_tokens": args.max_tokens, "switch_tokens": args.switch_tokens})
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    from models.configure import load_model
    from operators.config import Settings

    _, tokenizer = load_model(Settings(model={"lm": model}, output={"dir": str(work)}))
    make_adapters(model, work / "out", ["ua", "ub"])
    rows: list[dict] = []

    gate.check("generate")
    gen_row, gen_answers = run_generate(model, prompts, args.max_tokens, work / "gen", tokenizer)
    rows.append(gen_row)
    gate.end("generate")

    server = Serve(model, work / "out", args.max_tokens)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="unused-on-loopback", max_retries=0, timeout=600)
        ask(client, model, "warm", "Hello!", 4)  # the first answer pays for lazy initialisation
        gate.check("serve, 1 user", wait=False)
        start = time.perf_counter()
        one = [ask(client, model, "u0", p, args.max_tokens) for p in prompts]
        rows.append(summarize("serve, 1 user (sequential)", one, time.perf_counter() - start))
        same = sum(a["text"].strip() == g.strip() for a, g in zip(one, gen_answers))

        gate.check("serve, 4 users", wait=False)
        results: list[dict] = []
        lock = threading.Lock()

        def user_loop(i: int) -> None:
            mine = [ask(client, model, f"u{i}", p, args.max_tokens) for p in prompts[i::4]]
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=user_loop, args=(i,)) for i in range(4)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows.append(summarize("serve, 4 concurrent users", results, time.perf_counter() - start))

        gate.check("switch (resident)", wait=False)
        switch = switch_phase(server, model, prompts, args.switch_tokens, rounds, "resident (max_resident 4)")
    finally:
        server.close()
    gate.check("switch (reload)", wait=False)
    server = Serve(model, work / "out", args.max_tokens, max_resident=1)
    try:
        switch += switch_phase(server, model, prompts, args.switch_tokens, rounds, "reloaded (max_resident 1)")
    finally:
        server.close()
    gate.end("switch (reload)")

    serve1 = rows[1]
    targets = [
        {"target": "serve answers what `edgetune generate` answers (same template, greedy decoding)",
         "measured": f"{same} of {len(prompts)} answers identical", "met": same == len(prompts)},
        {"target": "serve's time to first token is below generate's time per answer (no model load per answer)",
         "measured": f"{serve1['ttft_median_s']:.3f} s vs {gen_row['answer_median_s']:.2f} s (medians)",
         "met": serve1["ttft_median_s"] < gen_row["answer_median_s"]},
    ]
    notes = [
        "TTFT is measured at the client, from sending the request to the first non-empty content chunk; with "
        "4 concurrent users it includes the wait for the one generation worker (answers are generated one at a time).",
        "decode tokens/s = (completion tokens - 1) / (answer seconds - TTFT), per answer; throughput = all "
        "completion tokens of the section / its wall time.",
        "`edgetune generate` tokens are counted by tokenizing its printed answer.",
        "switch: server_switch_mean_s is the server's own time to make the user's adapter the active one before "
        "generating (edgetune_serve_adapter_switch_seconds); adapter_loads counts adapters loaded from disk.",
    ]
    write_results("bench_serve", args.quick, head, {"latency": rows, "switch": switch}, targets, notes, gate,
                  title="bench_serve: edgetune serve vs edgetune generate, and the adapter switch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
