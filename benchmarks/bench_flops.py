"""Achieved FLOP/s of the embedding stage vs a torch float32 matmul measured in the same run.

    python benchmarks/bench_flops.py            # full run (~5 min)
    python benchmarks/bench_flops.py --quick    # smoke run
    python benchmarks/bench_flops.py --configs no_grad,unsorted --tag rerun --skip-extra   # a paired re-run

FLOPs counted (useful work only; padding tokens count for nothing)::

    per text of n real tokens:  2 * P * n  +  4 * L * h * n^2
    P = weights of the decoder's Linear layers (SmolLM2-135M: 106.2M; the tied 28.3M-row
        embedding table is a lookup and the LM head is not run by the embedder),
    L = layers (30), h = attention width = heads * head_dim (576):
        QK^T and attention x V each cost 2 * n^2 * h per layer, counted in full although
        the mask is causal (what SDPA computes on CPU for a masked batch).

RMSNorm, RoPE, SiLU and softmax are left out (a few % of the total). ``executed`` FLOPs also
count the padding of each batch (2 * P * batch * longest + attention on the padded length):
the difference is what length-sorting saves.

Reference: ``torch.matmul`` of two 2048x2048 float32 matrices, best of 7, at 1 and 2 torch
threads, measured at the start and again at the end of the run. The headline ratio divides
by the best matmul of the machine (whichever thread count was faster).

Texts: the first N valid ShareGPT events, prompt + response (the flow's default embedded
text), truncated to 512 LM tokens as the embedder does. The ``default`` row calls the shipped
``LastTokenEmbedder.embed`` (batch 8, length-sorted, ``torch.inference_mode``, float32, SDPA,
torch's default thread count); every other row runs :func:`forward`, a copy of its loop with
one setting changed, checked to give the same vectors as the shipped embedder.
"""

from __future__ import annotations

import copy
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

from _synthetic import real_events  # noqa: E402

NAME = "bench_flops"


def linear_params(module) -> int:
    import torch

    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def useful_flops(lengths: list[int], params: int, layers: int, width: int) -> float:
    return float(sum(2 * params * n + 4 * layers * width * n * n for n in lengths))


def executed_flops(batches: list[list[int]], params: int, layers: int, width: int) -> float:
    total = 0.0
    for lens in batches:
        longest = max(lens)
        total += len(lens) * (2 * params * longest + 4 * layers * width * longest * longest)
    return total


def batches_of(lengths: list[int], batch_size: int, sort: bool) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def forward(model, ids: list[list[int]], pad_id: int, batch_size: int, sort: bool, grad_mode: str) -> np.ndarray:
    """The shipped embedder's loop (left padding, real-token positions, last real token), one knob at a time."""
    import torch

    from models.embed import _pad

    decoder = model.get_decoder()
    out = np.empty((len(ids), model.config.hidden_size), dtype=np.float32)
    ctx = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "grad": nullcontext}[grad_mode]
    with ctx():
        for batch in batches_of([len(r) for r in ids], batch_size, sort):
            input_ids, mask = _pad([ids[i] for i in batch], pad_id, "left")
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
            last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
            out[batch] = hidden[torch.arange(len(batch)), last].float().detach().cpu().numpy()
    return out


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 7) -> float:
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=12, help="prompt+response texts per configuration")
    p.add_argument("--configs", default=None,
                   help="comma-separated subset of configuration names to run (the default row always runs first), "
                        "e.g. 'no_grad,unsorted'; results then go to bench_flops_<--tag>")
    p.add_argument("--tag", default="subset", help="suffix of the result files when --configs is given")
    p.add_argument("--skip-extra", action="store_true", help="skip the prompts-only and MiniLM rows")
    args = p.parse_args()
    name = NAME if args.configs is None else f"{NAME}_{args.tag}"
    n_texts = 4 if args.quick else args.texts

    import torch

    from models.embed import EmbedConfig, SentenceEmbedder, _token_ids, make_embedder
    from models.lm import LMConfig, load_lm

    default_threads = torch.get_num_threads()
    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    head = C.header(name, args.quick, extra={"texts": n_texts, "torch_default_threads": default_threads,
                                             "mkldnn": torch.backends.mkldnn.is_available()})

    model, tokenizer = load_lm(LMConfig())
    cfg = model.config
    params = linear_params(model.get_decoder())
    layers, width = cfg.num_hidden_layers, cfg.num_attention_heads * cfg.head_dim
    events = real_events(n_texts + 20)[:n_texts]
    texts = [e.text for e in events]
    ids = _token_ids(tokenizer, texts, 512)
    lengths = [len(r) for r in ids]
    n_prompts = 8 if args.quick else 32
    prompt_ids = _token_ids(tokenizer, [e.prompt for e in real_events(n_prompts + 20)[:n_prompts]], 512)
    pad_id = tokenizer.pad_token_id
    flops = useful_flops(lengths, params, layers, width)

    # correctness of the benchmark's copy of the loop (untimed, tiny)
    embedder = make_embedder(EmbedConfig(kind="lm", center=False), model, tokenizer)
    ref = embedder.embed(texts[:3]).vectors
    mine = forward(model, ids[:3], pad_id, 8, True, "inference_mode")
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4)

    matmul_rows = []
    load = gate.check("matmul (start)")
    for threads in (1, 2):
        matmul_rows.append({"when": "start", "threads": threads, "gflops": matmul_gflops(threads), "load1": round(load, 2)})
    torch.set_num_threads(default_threads)

    configs: list[dict[str, Any]] = [
        {"name": "default (shipped embedder)", "batch": 8, "threads": default_threads, "grad": "inference_mode", "dtype": "float32", "sort": True, "attn": "sdpa"},
        {"name": "batch 1", "batch": 1},
        {"name": "batch 4", "batch": 4},
        {"name": "batch 16", "batch": 16},
        {"name": "1 thread", "threads": 1},
        {"name": "no_grad", "grad": "no_grad"},
        {"name": "unsorted", "sort": False},
        {"name": "eager attention", "attn": "eager"},
        {"name": "bfloat16", "dtype": "bfloat16"},
    ]
    if args.quick:
        configs = [configs[0], configs[1], configs[4], configs[-1]]
    if args.configs is not None:
        wanted = [w.strip() for w in args.configs.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {c["name"] for c in configs}]
        if unknown:
            p.error(f"--configs: unknown {unknown}; choose from {[c['name'] for c in configs]}")
        configs = [configs[0]] + [c for c in configs[1:] if c["name"] in wanted]
    base = configs[0]
    rows = []
    bf16_model = None
    for spec in configs:
        c = {**base, **spec}
        load = gate.check(c["name"], wait=False)
        torch.set_num_threads(c["threads"])
        m = model
        if c["dtype"] == "bfloat16":
            bf16_model = bf16_model or copy.deepcopy(model).to(torch.bfloat16)
            m = bf16_model
        m.set_attn_implementation(c["attn"])
        # warm-up on one short text (allocator, kernels), not timed
        forward(m, [ids[int(np.argmin(lengths))]], pad_id, 1, True, c["grad"])
        t = time.perf_counter()
        if spec is base:
            embedder.embed(texts)
        else:
            forward(m, ids, pad_id, c["batch"], c["sort"], c["grad"])
        seconds = time.perf_counter() - t
        m.set_attn_implementation("sdpa")
        executed = executed_flops([[lengths[i] for i in b] for b in batches_of(lengths, c["batch"], c["sort"])], params, layers, width)
        rows.append({"config": c["name"], "batch": c["batch"], "threads": c["threads"], "grad_mode": c["grad"],
                     "dtype": c["dtype"], "sorted": c["sort"], "attention": c["attn"], "seconds": seconds,
                     "texts_per_s": n_texts / seconds, "tokens_per_s": sum(lengths) / seconds,
                     "useful_gflops": flops / seconds / 1e9, "executed_gflops": executed / seconds / 1e9,
                     "padding_share": 1 - flops / executed, "load1": round(load, 2)})
        print(rows[-1], flush=True)
        gate.end(c["name"])
    torch.set_num_threads(default_threads)

    # the same default embedder on prompts only (short texts: what the stream sees for unlabeled events)
    extra_rows = []
    if not args.skip_extra:
        load = gate.check("default on prompts", wait=False)
        p_texts = tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        p_lengths = [len(r) for r in prompt_ids]
        t = time.perf_counter()
        forward(model, prompt_ids, pad_id, 8, True, "inference_mode")
        seconds = time.perf_counter() - t
        extra_rows.append({"embedder": "smollm2 last-token, default", "texts": f"{len(p_lengths)} prompts",
                           "mean_tokens": float(np.mean(p_lengths)), "seconds": seconds,
                           "useful_gflops": useful_flops(p_lengths, params, layers, width) / seconds / 1e9, "load1": round(load, 2)})
        del p_texts

        # MiniLM (the option): 6 layers x 384, 256 word pieces at most
        minilm = SentenceEmbedder(EmbedConfig(kind="minilm", center=False), tokenizer)
        m_params = linear_params(minilm.model.encoder)
        m_layers, m_width = minilm.model.config.num_hidden_layers, minilm.model.config.hidden_size
        m_lengths = [len(r) for r in _token_ids(minilm.tokenizer, texts, minilm.max_length)]
        load = gate.check("minilm default", wait=False)
        minilm.embed(texts[:1])
        t = time.perf_counter()
        minilm.embed(texts)
        seconds = time.perf_counter() - t
        extra_rows.append({"embedder": "all-MiniLM-L6-v2, default", "texts": f"{n_texts} prompt+response",
                           "mean_tokens": float(np.mean(m_lengths)), "seconds": seconds,
                           "useful_gflops": useful_flops(m_lengths, m_params, m_layers, m_width) / seconds / 1e9,
                           "load1": round(load, 2)})
    for r in extra_rows:
        print(r, flush=True)

    load = gate.check("matmul (end)", wait=False)
    for threads in (1, 2):
        matmul_rows.append({"when": "end", "threads": threads, "gflops": matmul_gflops(threads), "load1": round(load, 2)})
    torch.set_num_threads(default_threads)

    peak = max(r["gflops"] for r in matmul_rows)
    by_threads = {t: max(r["gflops"] for r in matmul_rows if r["threads"] == t) for t in (1, 2)}
    for r in rows:
        r["ratio_vs_best_matmul"] = r["useful_gflops"] / peak
        r["ratio_vs_matmul_same_threads"] = r["useful_gflops"] / by_threads[min(2, r["threads"])]
    for r in extra_rows:
        r["ratio_vs_best_matmul"] = r["useful_gflops"] / peak

    default = rows[0]
    best = max(rows, key=lambda r: r["useful_gflops"])
    targets = [
        {"target": "embedding stage achieved FLOP/s >= 50 % of torch fp32 matmul (default config)",
         "measured": f"{100 * default['ratio_vs_best_matmul']:.0f} % ({default['useful_gflops']:.1f} of {peak:.1f} GFLOP/s)",
         "met": default["ratio_vs_best_matmul"] >= 0.5, "note": "shipped LastTokenEmbedder, prompt+response texts",
         "command": head["command"]},
        {"target": "embedding stage achieved FLOP/s >= 50 % of torch fp32 matmul (best config)",
         "measured": f"{100 * best['ratio_vs_best_matmul']:.0f} % ({best['useful_gflops']:.1f} GFLOP/s, {best['config']})",
         "met": best["ratio_vs_best_matmul"] >= 0.5, "note": f"vs matmul at the same thread count: {100 * best['ratio_vs_matmul_same_threads']:.0f} %",
         "command": head["command"]},
    ]
    notes = [
        f"Texts: {n_texts} prompt+response texts, {sum(lengths)} real tokens (mean {np.mean(lengths):.0f}, max {max(lengths)}); "
        f"useful work {flops / 1e12:.3f} TFLOP per pass. P = {params / 1e6:.1f}M Linear weights, L = {layers}, h = {width}.",
        "`ratio_vs_best_matmul` divides by the fastest matmul measured in this run (start or end, 1 or 2 threads); "
        "`ratio_vs_matmul_same_threads` by the matmul at the row's own thread count.",
        "`padding_share`: share of executed FLOPs spent on padding tokens (by the count above).",
        "Each configuration runs once over all texts after a one-text warm-up; the machine is shared, so compare rows "
        "with their `load1`.",
        "Not tried: torch.compile (minutes of compilation on 2 cores for a 1-pass benchmark), int8 dynamic quantization "
        "(changes the embeddings).",
    ]
    C.write_results(name, args.quick, head, {"configs": rows, "other_texts_and_embedders": extra_rows, "matmul": matmul_rows},
                    targets, notes, gate, title="Embedding stage FLOP/s vs torch matmul")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
