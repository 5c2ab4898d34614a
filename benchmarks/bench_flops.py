"""Achieved FLOP/s of the embedding and LoRA-training stages vs torch matmul of the same dtype, same run.

    python benchmarks/bench_flops.py            # full run (~6 min)
    python benchmarks/bench_flops.py --quick    # smoke run
    python benchmarks/bench_flops.py --configs no_grad,unsorted --tag rerun --skip-extra   # a paired re-run

FLOPs counted (useful work only; padding tokens count for nothing)::

    embedding, per text of n real tokens:  2 * P * n  +  4 * L * h * n^2
    LoRA step, per example of n real tokens, k of them given logits:
                                           4 * P * n  + 12 * L * h * n^2  +  4 * V * d * k
    P = weights of the decoder's Linear layers (SmolLM2-135M: 106.2M; the tied 28.3M-row
        embedding table is a lookup and the LM head is not run by the embedder),
    L = layers (30), h = attention width = heads * head_dim (576), V x d = the LM head,
    QK^T and attention x V each cost 2 * n^2 * h per layer, counted in full although
        the mask is causal (what SDPA computes on CPU for a masked batch);
    a training step is the forward plus a backward that needs the input gradients of
        every frozen layer (2 * P * n; no weight gradients but the LoRA ones, ~1 % of P)
        and twice the attention work; the LM head runs on the k positions from the first
        answer token on (``logits_to_keep``), forward and backward.

RMSNorm, RoPE, SiLU and softmax are left out (a few % of the total). ``executed`` FLOPs also
count the padding of each batch (2 * P * batch * longest + attention on the padded length):
the difference is what length-sorting saves.

Reference (the "peak"): ``torch.matmul`` of two 2048x2048 matrices in float32 and in
bfloat16, best of 7, at 1 and 2 torch threads, measured at the start and again at the end.
Each stage's ratio divides by the best matmul *of its own dtype* (whichever thread count
was faster).

Texts: the first N valid ShareGPT events, prompt + response (the flow's default embedded
text when answers are kept), truncated to 512 LM tokens as the embedder does. The
``default`` row calls the shipped ``LastTokenEmbedder.embed`` with the settings' defaults
(``model.dtype`` auto and the automatic thread count, as a replay would choose them here);
every other row runs :func:`forward`, a copy of its loop with one setting changed, checked
to give the same vectors as the shipped embedder. Training rows call the shipped
``train_lora`` (batch 4, max_seq_len 256, rank 8 on q/k/v/o: the replay's defaults) on
real prompt+response pairs; the first step is a warm-up and is not counted.

Where the default embedding's time goes (tables ``breakdown`` and ``model_shapes``):

- ``breakdown``: one ``torch.profiler`` pass over the shipped embedder's call on the same texts (and
  one over the all-bf16 decoder of the ``bf16 weights`` row), each op's *self* time put in one
  category: matmul kernels, casts (``aten::to``/``_to_copy`` and everything under them: autocast's
  casts of activations), SDPA, clones (``repeat_kv``'s k/v copies), other elementwise ops (RMSNorm,
  RoPE, SiLU, residual adds, masks), views and allocations; the tokenizer timed on its own; and the
  gap between the profiled wall time and all op self time (Python, the dispatcher, the profiler).
- ``model_shapes``: the model's own Linear layers and attention alone, at the shapes the default run
  executes (each length-sorted batch of the shipped size, padded to its longest text; 30 layers), on random data in
  the dtype in use: bf16 x bf16 (the kernels' best at these shapes), fp32 activations into bf16
  weights under autocast (what the shipped embedder runs: the activation cast included), and fp32
  weights under autocast in a fresh context (each call casts its weight too). Their sum is the most
  the embedder could reach if nothing but its matmuls and attention took time.
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


def train_flops(rendered: list[tuple[list[int], list[int]]], params: int, layers: int, width: int, head: int) -> float:
    """Useful FLOPs of forward + backward over ``rendered`` examples (see the module docstring)."""
    from models.train import IGNORE_INDEX

    total = 0.0
    for ids, labels in rendered:
        n = len(ids)
        first = next((i for i, lab in enumerate(labels) if lab != IGNORE_INDEX), n)
        kept = n - max(first - 1, 0)
        total += 4 * params * n + 12 * layers * width * n * n + 4 * head * kept
    return total


def batches_of(lengths: list[int], batch_size: int, sort: bool) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def forward(model, ids: list[list[int]], pad_id: int, batch_size: int, sort: bool, grad_mode: str,
            compute: str = "float32") -> np.ndarray:
    """The shipped embedder's loop (left padding, real-token positions, last real token), one knob at a time."""
    import torch

    from models.embed import _pad
    from models.hardware import compute_context

    decoder = model.get_decoder()
    out = np.empty((len(ids), model.config.hidden_size), dtype=np.float32)
    ctx = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "grad": nullcontext}[grad_mode]
    with ctx(), compute_context(compute):
        for batch in batches_of([len(r) for r in ids], batch_size, sort):
            input_ids, mask = _pad([ids[i] for i in batch], pad_id, "left")
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
            last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
            out[batch] = hidden[torch.arange(len(batch)), last].float().detach().cpu().numpy()
    return out


def matmul_gflops(threads: int, dtype: str = "float32", size: int = 2048, repeats: int = 7) -> float:
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    kind = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a = torch.randn(size, size, generator=g).to(kind)
    b = torch.randn(size, size, generator=g).to(kind)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


# --- where the time goes ----------------------------------------------------------

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::baddbmm",
              "aten::mkldnn_linear", "aten::_mkldnn_linear"}
CAST_OPS = {"aten::to", "aten::_to_copy"}
VIEW_OPS = {"aten::view", "aten::reshape", "aten::_unsafe_view", "aten::transpose", "aten::t", "aten::as_strided",
            "aten::slice", "aten::select", "aten::narrow", "aten::unsqueeze", "aten::squeeze", "aten::expand",
            "aten::permute", "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::contiguous",
            "aten::detach", "aten::alias", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "detach"}
CATEGORIES = ("matmul kernels (mm/addmm/bmm/linear)", "casts (aten::to/_to_copy/copy_, autocast)",
              "attention (SDPA kernel)", "clones (repeat_kv k/v copies, contiguous)",
              "elementwise (RMSNorm, RoPE, SiLU, residual, masks)", "views and allocations")


def op_category(event) -> str:
    """The category of one profiler event's self time: by the event's name and its callers' names.

    Autocast's casts run inside the op they feed (``aten::linear`` -> ``aten::to`` -> ``aten::copy_``),
    so a cast anywhere in the caller chain wins over the op's own name.
    """
    chain = []
    e = event
    while e is not None:
        chain.append(e.name)
        e = e.cpu_parent
    if any(n in CAST_OPS for n in chain):
        return CATEGORIES[1]
    if any("scaled_dot_product" in n or "flash_attention" in n for n in chain):
        return CATEGORIES[2]
    if event.name in MATMUL_OPS:
        return CATEGORIES[0]
    if any(n == "aten::clone" for n in chain):
        return CATEGORIES[3]
    if event.name in VIEW_OPS:
        return CATEGORIES[5]
    return CATEGORIES[4]


def profile_breakdown(run_name: str, call, unprofiled_s: float, tokenize_s: float) -> list[dict[str, Any]]:
    """Rows of ``breakdown``: ``call()`` once under ``torch.profiler``, its wall time split by op category."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        call()
        wall = time.perf_counter() - t
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    calls = dict.fromkeys(CATEGORIES, 0)
    top: dict[str, dict[str, float]] = {c: {} for c in CATEGORIES}
    for ev in prof.events():
        if ev.device_type.name != "CPU":
            continue
        cat = op_category(ev)
        s = ev.self_cpu_time_total / 1e6
        seconds[cat] += s
        calls[cat] += 1
        top[cat][ev.name] = top[cat].get(ev.name, 0.0) + s
    ops_total = sum(seconds.values())
    rows = []
    for cat in CATEGORIES:
        names = sorted(top[cat], key=lambda n: -top[cat][n])[:4]
        rows.append({"run": run_name, "category": cat, "seconds": seconds[cat], "share_of_wall": seconds[cat] / wall,
                     "op_calls": calls[cat], "top_ops": ", ".join(f"{n.removeprefix('aten::')} {top[cat][n]:.3f}s" for n in names)})
    tok = min(tokenize_s, max(wall - ops_total, 0.0)) if tokenize_s else 0.0
    if tokenize_s:
        rows.append({"run": run_name, "category": "tokenizer (timed alone)", "seconds": tok, "share_of_wall": tok / wall,
                     "op_calls": None, "top_ops": ""})
    gap = wall - ops_total - tok
    rows.append({"run": run_name, "category": "gap: Python, dispatcher, profiler (wall - op self time)", "seconds": gap,
                 "share_of_wall": gap / wall, "op_calls": None,
                 "top_ops": f"profiled wall {wall:.3f} s vs {unprofiled_s:.3f} s unprofiled"})
    rows.append({"run": run_name, "category": "wall (profiled)", "seconds": wall, "share_of_wall": 1.0,
                 "op_calls": sum(calls.values()), "top_ops": ""})
    return rows


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def model_shape_rows(cfg, batch_tokens: list[tuple[int, int]], repeats: int = 3) -> list[dict[str, Any]]:
    """The model's Linear layers and SDPA alone at the default run's shapes (``batch_tokens``: (texts, longest)
    per batch), per layer type summed over batches and multiplied by the layer count; see the module docstring."""
    import torch
    import torch.nn.functional as F

    h, inter = cfg.hidden_size, cfg.intermediate_size
    heads, kv, hd, layers = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers
    shapes = [("q_proj", h, heads * hd), ("k_proj", h, kv * hd), ("v_proj", h, kv * hd), ("o_proj", heads * hd, h),
              ("gate_proj", h, inter), ("up_proj", h, inter), ("down_proj", inter, h)]
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, n_in, n_out in shapes:
        w32 = torch.randn(n_out, n_in, generator=g) * 0.02
        w16 = w32.to(torch.bfloat16)
        flops = t_bf16 = t_auto = t_auto_fp32w = 0.0
        for n, longest in batch_tokens:
            m = n * longest
            x32 = torch.randn(m, n_in, generator=g)
            x16 = x32.to(torch.bfloat16)
            flops += 2.0 * m * n_in * n_out * layers
            with torch.inference_mode():
                t_bf16 += layers * _best_seconds(lambda: F.linear(x16, w16), repeats)

                def autocast_act():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        F.linear(x32, w16)

                def autocast_weight():  # a fresh context: the weight's cast is not cached
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        F.linear(x32, w32)

                t_auto += layers * _best_seconds(autocast_act, repeats)
                t_auto_fp32w += layers * _best_seconds(autocast_weight, repeats)
        rows.append({"op": name, "shape": f"(M, {n_in}) x ({n_in}, {n_out})", "calls": layers * len(batch_tokens),
                     "executed_gflop": flops / 1e9, "bf16_s": t_bf16, "bf16_gflops": flops / t_bf16 / 1e9,
                     "autocast_fp32_act_s": t_auto, "autocast_fp32_act_gflops": flops / t_auto / 1e9,
                     "autocast_fp32_weight_s": t_auto_fp32w, "autocast_fp32_weight_gflops": flops / t_auto_fp32w / 1e9})
    # attention: SDPA on k/v repeated to all heads (what transformers' sdpa path hands it), causal + padding mask
    flops = t_bf16 = t_auto = t_causal = 0.0
    for n, longest in batch_tokens:
        q32 = torch.randn(n, heads, longest, hd, generator=g)
        k32, v32 = torch.randn_like(q32), torch.randn_like(q32)
        q16, k16, v16 = (t.to(torch.bfloat16) for t in (q32, k32, v32))
        causal = torch.ones(longest, longest, dtype=torch.bool).tril()
        pad = torch.arange(longest)[None, :] >= torch.linspace(0, longest // 3, n).long()[:, None]  # left padding
        mask = (causal[None] & pad[:, None, :])[:, None]
        mask[..., torch.arange(longest), torch.arange(longest)] = True  # no fully masked row
        flops += 4.0 * heads * hd * n * longest * longest * layers
        with torch.inference_mode():
            t_bf16 += layers * _best_seconds(lambda: F.scaled_dot_product_attention(q16, k16, v16, attn_mask=mask), repeats)

            def autocast_sdpa():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask)

            t_auto += layers * _best_seconds(autocast_sdpa, repeats)
            # without a mask (right padding would allow it: a causal text never sees the pads after it)
            t_causal += layers * _best_seconds(lambda: F.scaled_dot_product_attention(q16, k16, v16, is_causal=True), repeats)
    rows.append({"op": "sdpa", "shape": f"({heads} heads, L, {hd}), mask", "calls": layers * len(batch_tokens),
                 "executed_gflop": flops / 1e9, "bf16_s": t_bf16, "bf16_gflops": flops / t_bf16 / 1e9,
                 "autocast_fp32_act_s": t_auto, "autocast_fp32_act_gflops": flops / t_auto / 1e9})
    causal = {"op": "sdpa, is_causal without mask (not in the total)", "shape": f"({heads} heads, L, {hd})",
              "calls": layers * len(batch_tokens), "executed_gflop": flops / 1e9, "bf16_s": t_causal,
              "bf16_gflops": flops / t_causal / 1e9}
    total = {k: sum(r.get(k) or 0.0 for r in rows) for k in ("executed_gflop", "bf16_s", "autocast_fp32_act_s")}
    lin = [r for r in rows if r["op"] != "sdpa"]
    lin_w = sum(r["autocast_fp32_weight_s"] for r in lin) + rows[-1]["autocast_fp32_act_s"]
    rows.append({"op": "all (linears + sdpa)", "shape": f"{len(batch_tokens)} batches x {layers} layers",
                 "calls": sum(r["calls"] for r in rows), "executed_gflop": total["executed_gflop"],
                 "bf16_s": total["bf16_s"], "bf16_gflops": total["executed_gflop"] / total["bf16_s"],
                 "autocast_fp32_act_s": total["autocast_fp32_act_s"],
                 "autocast_fp32_act_gflops": total["executed_gflop"] / total["autocast_fp32_act_s"],
                 "autocast_fp32_weight_s": lin_w, "autocast_fp32_weight_gflops": total["executed_gflop"] / lin_w})
    return rows[:-1] + [causal, rows[-1]]


def weight_cast_seconds(decoder, repeats: int = 3) -> float:
    """Seconds to cast every Linear weight of ``decoder`` from fp32 to bf16 once: what autocast does for fp32
    weights at every forward pass under ``torch.inference_mode`` (its cast cache, which would keep a weight's
    bf16 copy for the whole context, is not used in inference mode: 5 calls of one Linear count 10 ``_to_copy``
    under inference_mode, 6 under no_grad, torch 2.13)."""
    import torch

    weights = [m.weight.detach() for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    return _best_seconds(lambda: [w.to(torch.bfloat16) for w in weights], repeats)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


class TokenCounter:
    """A ``transformers`` streamer that counts the decoded tokens (its first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.tokens = 0
        self._prompt_seen = False

    def put(self, value) -> None:
        if self._prompt_seen:
            self.tokens += int(value.numel())
        self._prompt_seen = True

    def end(self) -> None:
        self._prompt_seen = False


def bf16_speedups(embed_rows: list[dict], train_rows: list[dict], gen_rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """``{stage: [(threads, fp32 seconds / bf16 seconds), ...]}`` from the rows that ran both dtypes.

    >>> bf16_speedups([{"config": "fp32, 1 thread", "seconds": 4.0}, {"config": "bf16 autocast, 1 thread", "seconds": 2.0}],
    ...               [], [{"dtype": "float32", "threads": 2, "seconds": 3.0}, {"dtype": "bfloat16", "threads": 2, "seconds": 4.0}])
    {'embedding': [(1, 2.0)], 'generation': [(2, 0.75)]}
    """
    out: dict[str, list[tuple[int, float]]] = {}
    by_config = {r["config"]: r["seconds"] for r in embed_rows}
    for threads, suffix in ((2, "2 threads"), (1, "1 thread")):
        fp32, bf16 = by_config.get(f"fp32, {suffix}"), by_config.get(f"bf16 autocast, {suffix}")
        if fp32 and bf16:
            out.setdefault("embedding", []).append((threads, fp32 / bf16))
    for stage, stage_rows, key in (("LoRA step", train_rows, "seconds_per_step"), ("generation", gen_rows, "seconds")):
        seconds = {(r["dtype"], r["threads"]): r[key] for r in stage_rows}
        for threads in (2, 1):
            fp32, bf16 = seconds.get(("float32", threads)), seconds.get(("bfloat16", threads))
            if fp32 and bf16:
                out.setdefault(stage, []).append((threads, fp32 / bf16))
    return out


def main() -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=12, help="prompt+response texts per configuration")
    p.add_argument("--train-steps", type=int, default=4, help="LoRA steps per training row (the first is a warm-up)")
    p.add_argument("--configs", default=None,
                   help="comma-separated subset of configuration names to run (the default row always runs first), "
                        "e.g. 'no_grad,unsorted'; results then go to bench_flops_<--tag>")
    p.add_argument("--tag", default="subset", help="suffix of the result files when --configs is given")
    p.add_argument("--skip-extra", action="store_true", help="skip the prompts-only and MiniLM rows")
    p.add_argument("--skip-train", action="store_true", help="skip the LoRA training rows")
    p.add_argument("--skip-breakdown", action="store_true", help="skip the profile and the model-shape matmuls")
    p.add_argument("--skip-generate", action="store_true", help="skip the generation rows")
    p.add_argument("--gen-prompts", type=int, default=4, help="prompts answered one at a time per generation row")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per answer in the generation rows")
    args = p.parse_args()
    name = NAME if args.configs is None else f"{NAME}_{args.tag}"
    n_texts = 4 if args.quick else args.texts
    train_steps = 2 if args.quick else max(2, args.train_steps)

    import torch

    from models.configure import dtype_choice, embed_config, thread_choice
    from models.embed import EmbedConfig, SentenceEmbedder, _token_ids, make_embedder
    from models.generate import GenerateConfig, generate
    from models.lm import LMConfig, load_lm
    from models.train import TrainConfig, render_example, train_lora
    from operators.config import Settings

    default_threads = torch.get_num_threads()
    gate = C.LoadGate(limit=args.load_limit, budget_s=args.max_wait, busy_limit=args.busy_limit)
    settings = Settings()
    auto_dtype, auto_threads = dtype_choice(settings), thread_choice(settings)
    head = C.header(name, args.quick, extra={
        "texts": n_texts, "torch_default_threads": default_threads, "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "auto_dtype": f"{auto_dtype.dtype} ({auto_dtype.reason}{', cached' if auto_dtype.cached else ''})",
        "auto_threads": f"{auto_threads.threads} ({auto_threads.reason})"})

    model, tokenizer = load_lm(LMConfig())
    cfg = model.config
    params = linear_params(model.get_decoder())
    layers, width = cfg.num_hidden_layers, cfg.num_attention_heads * cfg.head_dim
    lm_head = model.get_output_embeddings().weight.numel()
    events = real_events(n_texts + 40)
    texts = [e.text for e in events[:n_texts]]
    ids = _token_ids(tokenizer, texts, 512)
    lengths = [len(r) for r in ids]
    n_prompts = 8 if args.quick else 32
    prompts = [e.prompt for e in real_events(n_prompts + 20)[:n_prompts]]
    pad_id = tokenizer.pad_token_id
    flops = useful_flops(lengths, params, layers, width)

    # correctness of the benchmark's copy of the loop (untimed, short)
    embedder = make_embedder(EmbedConfig(kind="lm", center=False), model, tokenizer)
    ref = embedder.embed(texts[:3]).vectors
    np.testing.assert_allclose(forward(model, ids[:3], pad_id, 8, True, "inference_mode"), ref, rtol=1e-4, atol=1e-4)
    agree = cosine_min(forward(model, ids[:3], pad_id, 8, True, "inference_mode", "bfloat16"), ref)
    assert agree >= 0.99, f"bf16 autocast embeddings disagree with fp32: min cosine {agree}"

    dtypes = ("float32", "bfloat16")
    matmul_rows = []
    load = gate.check("matmul (start)")
    for dtype in dtypes:
        for threads in (1, 2):
            matmul_rows.append({"when": "start", "dtype": dtype, "threads": threads,
                                "gflops": matmul_gflops(threads, dtype), "load1": round(load, 2)})
    torch.set_num_threads(default_threads)

    shipped = embed_config(settings)
    configs: list[dict[str, Any]] = [
        {"name": "default (shipped embedder, auto)", "batch": shipped.batch_size, "threads": auto_threads.threads,
         "grad": "inference_mode", "dtype": shipped.dtype, "sort": True, "attn": "sdpa", "weights": "float32"},
        {"name": "fp32, 2 threads", "dtype": "float32", "threads": 2},
        {"name": "fp32, 1 thread", "dtype": "float32", "threads": 1},
        {"name": "bf16 autocast, 2 threads", "dtype": "bfloat16", "threads": 2},
        {"name": "bf16 autocast, 1 thread", "dtype": "bfloat16", "threads": 1},
        {"name": "bf16 weights", "dtype": "bfloat16", "weights": "bfloat16"},
        {"name": "batch 1", "batch": 1},
        {"name": "batch 4", "batch": 4},
        {"name": "batch 16", "batch": 16},
        {"name": "no_grad", "grad": "no_grad"},
        {"name": "unsorted", "sort": False},
        {"name": "eager attention", "attn": "eager"},
    ]
    if args.quick:
        configs = configs[:4]
    if args.configs is not None:
        wanted = [w.strip() for w in args.configs.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {c["name"] for c in configs}]
        if unknown:
            p.error(f"--configs: unknown {unknown}; choose from {[c['name'] for c in configs]}")
        configs = [configs[0]] + [c for c in configs[1:] if c["name"] in wanted]
    base = configs[0]
    shipped_embedder = make_embedder(shipped, model, tokenizer)
    rows = []
    bf16_model = None
    for spec in configs:
        c = {**base, **spec}
        load = gate.check(c["name"], wait=False)
        torch.set_num_threads(c["threads"])
        m = model
        if c["weights"] == "bfloat16":
            bf16_model = bf16_model or copy.deepcopy(model).to(torch.bfloat16)
            m = bf16_model
        compute = "float32" if c["weights"] == "bfloat16" else c["dtype"]
        m.set_attn_implementation(c["attn"])
        # warm-up on one short text (allocator, kernels), not timed; the shipped embedder's own first call also
        # computes its calibration mean (64 texts) and, in bf16, casts its linear weights: once per process
        forward(m, [ids[int(np.argmin(lengths))]], pad_id, 1, True, c["grad"], compute)
        if spec is base:
            shipped_embedder.embed([texts[int(np.argmin(lengths))]])
        t = time.perf_counter()
        if spec is base:
            shipped_embedder.embed(texts)
        else:
            forward(m, ids, pad_id, c["batch"], c["sort"], c["grad"], compute)
        seconds = time.perf_counter() - t
        m.set_attn_implementation("sdpa")
        executed = executed_flops([[lengths[i] for i in b] for b in batches_of(lengths, c["batch"], c["sort"])], params, layers, width)
        rows.append({"config": c["name"], "batch": c["batch"], "threads": c["threads"], "grad_mode": c["grad"],
                     "dtype": c["dtype"], "weights": c["weights"], "sorted": c["sort"], "attention": c["attn"],
                     "seconds": seconds, "texts_per_s": n_texts / seconds, "tokens_per_s": sum(lengths) / seconds,
                     "useful_gflops": flops / seconds / 1e9, "executed_gflops": executed / seconds / 1e9,
                     "padding_share": 1 - flops / executed, "load1": round(load, 2)})
        print(rows[-1], flush=True)
        gate.end(c["name"])

    # where the default embedding's time goes: a profile of the shipped embedder, the model's shapes alone
    breakdown_rows: list[dict[str, Any]] = []
    shape_rows: list[dict[str, Any]] = []
    cast_s = all_bf16_agree = None
    if not args.skip_breakdown:
        load = gate.check("breakdown", wait=False)
        torch.set_num_threads(auto_threads.threads)
        t = time.perf_counter()
        _token_ids(tokenizer, texts, shipped.max_tokens)
        tokenize_s = time.perf_counter() - t
        breakdown_rows += profile_breakdown("default (shipped embedder)", lambda: shipped_embedder.embed(texts),
                                            rows[0]["seconds"], tokenize_s)
        bf16_model = bf16_model or copy.deepcopy(model).to(torch.bfloat16)
        forward(bf16_model, [ids[int(np.argmin(lengths))]], pad_id, 1, True, "inference_mode")  # warm-up
        t = time.perf_counter()
        forward(bf16_model, ids, pad_id, shipped.batch_size, True, "inference_mode")
        bf16_s = time.perf_counter() - t
        breakdown_rows += profile_breakdown("bf16 weights (all-bf16 decoder)",
                                            lambda m=bf16_model: forward(m, ids, pad_id, shipped.batch_size, True, "inference_mode"),
                                            bf16_s, 0.0)
        all_bf16_agree = cosine_min(forward(bf16_model, ids[:3], pad_id, 8, True, "inference_mode"), ref)
        for r in breakdown_rows:
            print(r, flush=True)
        batch_tokens = [(len(b), max(lengths[i] for i in b)) for b in batches_of(lengths, shipped.batch_size, True)]
        shape_rows = model_shape_rows(cfg, batch_tokens, repeats=2 if args.quick else 3)
        cast_s = weight_cast_seconds(model.get_decoder())
        for r in shape_rows:
            print(r, flush=True)
        gate.end("breakdown")
    del bf16_model
    torch.set_num_threads(default_threads)

    # LoRA training: the shipped train_lora at the replay's defaults, per dtype and thread count
    train_rows = []
    if not args.skip_train:
        pairs = [(e.prompt, e.response) for e in events if e.response][:4 * train_steps]
        tdefaults = TrainConfig()
        rendered = [render_example(tokenizer, q, a, tdefaults.max_seq_len) for q, a in pairs]
        specs = [("float32", 2), ("bfloat16", 2), ("float32", 1), ("bfloat16", 1)]
        if args.quick:
            specs = specs[:2]
        for dtype, threads in specs:
            load = gate.check(f"train {dtype} {threads}", wait=False)
            torch.set_num_threads(threads)
            tcfg = TrainConfig(max_steps=train_steps, dtype=dtype)
            peft_model, report = train_lora(model, tokenizer, pairs, tcfg)
            peft_model.unload()
            # train_lora shuffles with the seed: recover which examples each step took to count their FLOPs
            order = torch.randperm(len(rendered), generator=torch.Generator().manual_seed(tcfg.seed)).tolist()
            steps = [order[i : i + tcfg.batch_size] for i in range(0, len(order), tcfg.batch_size)][:train_steps]
            counted = steps[1:]  # the first step is a warm-up
            seconds = sum(report.step_seconds[1:])
            work = sum(train_flops([rendered[i] for i in step], params, layers, width, lm_head) for step in counted)
            tokens = sum(len(rendered[i][0]) for step in counted for i in step)
            train_rows.append({"dtype": dtype, "threads": threads, "steps_timed": len(counted),
                               "batch": tcfg.batch_size, "max_seq_len": tcfg.max_seq_len,
                               "seconds_per_step": seconds / len(counted), "tokens_per_s": tokens / seconds,
                               "useful_gflops": work / seconds / 1e9, "loss_first": report.loss_first,
                               "loss_last": report.loss_last, "load1": round(load, 2)})
            print(train_rows[-1], flush=True)
            gate.end(f"train {dtype} {threads}")
        torch.set_num_threads(default_threads)

    # generation: the shipped generate(), one prompt at a time as serve and `edgetune generate` answer, greedy
    gen_rows = []
    if not args.skip_generate:
        gen_prompts = prompts[: 2 if args.quick else args.gen_prompts]
        answers: dict[str, list[str]] = {}
        for dtype, threads in [("float32", 2), ("bfloat16", 2), ("float32", 1), ("bfloat16", 1)][: 2 if args.quick else 4]:
            load = gate.check(f"generate {dtype} {threads}", wait=False)
            torch.set_num_threads(threads)
            gcfg = GenerateConfig(max_new_tokens=8 if args.quick else args.gen_tokens, batch_size=1, dtype=dtype)
            generate(model, tokenizer, gen_prompts[:1], GenerateConfig(max_new_tokens=2, batch_size=1, dtype=dtype))
            counter = TokenCounter()
            t = time.perf_counter()
            texts_out = [generate(model, tokenizer, [q], gcfg, streamer=counter)[0] for q in gen_prompts]
            seconds = time.perf_counter() - t
            answers.setdefault(dtype, texts_out)
            gen_rows.append({"dtype": dtype, "threads": threads, "prompts": len(gen_prompts),
                             "max_new_tokens": gcfg.max_new_tokens, "new_tokens": counter.tokens, "seconds": seconds,
                             "seconds_per_answer": seconds / len(gen_prompts), "tokens_per_s": counter.tokens / seconds,
                             "same_answers_as_fp32": (sum(a == b for a, b in zip(texts_out, answers["float32"]))
                                                      if "float32" in answers else None),
                             "load1": round(load, 2)})
            print(gen_rows[-1], flush=True)
            gate.end(f"generate {dtype} {threads}")
        torch.set_num_threads(default_threads)

    # the same default embedder on prompts only (short texts: what the stream sees for unlabeled events)
    extra_rows = []
    if not args.skip_extra:
        load = gate.check("default on prompts", wait=False)
        torch.set_num_threads(auto_threads.threads)
        p_lengths = [len(r) for r in _token_ids(tokenizer, prompts, shipped.max_tokens)]
        t = time.perf_counter()
        shipped_embedder.embed(prompts)  # the shipped embedder itself (warmed up above)
        seconds = time.perf_counter() - t
        extra_rows.append({"embedder": f"smollm2 last-token, default ({shipped.dtype})", "texts": f"{len(p_lengths)} prompts",
                           "dtype": shipped.dtype, "mean_tokens": float(np.mean(p_lengths)), "seconds": seconds,
                           "ms_per_text": 1000 * seconds / len(p_lengths),
                           "useful_gflops": useful_flops(p_lengths, params, layers, width) / seconds / 1e9, "load1": round(load, 2)})

        # MiniLM (the option): 6 layers x 384, 256 word pieces at most
        minilm = SentenceEmbedder(EmbedConfig(kind="minilm", center=False, dtype=shipped.dtype), tokenizer)
        m_params = linear_params(minilm.model.encoder)
        m_layers, m_width = minilm.model.config.num_hidden_layers, minilm.model.config.hidden_size
        m_lengths = [len(r) for r in _token_ids(minilm.tokenizer, texts, minilm.max_length)]
        load = gate.check("minilm default", wait=False)
        minilm.embed(texts[:1])
        t = time.perf_counter()
        minilm.embed(texts)
        seconds = time.perf_counter() - t
        extra_rows.append({"embedder": f"all-MiniLM-L6-v2, default ({shipped.dtype})", "texts": f"{n_texts} prompt+response",
                           "dtype": shipped.dtype, "mean_tokens": float(np.mean(m_lengths)), "seconds": seconds,
                           "ms_per_text": 1000 * seconds / n_texts,
                           "useful_gflops": useful_flops(m_lengths, m_params, m_layers, m_width) / seconds / 1e9,
                           "load1": round(load, 2)})
        torch.set_num_threads(default_threads)
    for r in extra_rows:
        print(r, flush=True)

    load = gate.check("matmul (end)", wait=False)
    for dtype in dtypes:
        for threads in (1, 2):
            matmul_rows.append({"when": "end", "dtype": dtype, "threads": threads,
                                "gflops": matmul_gflops(threads, dtype), "load1": round(load, 2)})
    torch.set_num_threads(default_threads)

    peak = {d: max(r["gflops"] for r in matmul_rows if r["dtype"] == d) for d in dtypes}
    same_threads = {(d, t): max(r["gflops"] for r in matmul_rows if r["dtype"] == d and r["threads"] == t)
                    for d in dtypes for t in (1, 2)}
    for r in rows + train_rows + extra_rows:
        d = "bfloat16" if r.get("weights") == "bfloat16" else r["dtype"]
        r["peak_gflops"] = peak[d]
        r["ratio_vs_peak"] = r["useful_gflops"] / peak[d]
        if "threads" in r:
            r["ratio_vs_matmul_same_threads"] = r["useful_gflops"] / same_threads[(d, min(2, r["threads"]))]

    default = rows[0]
    account, account_notes = "shipped LastTokenEmbedder with auto dtype and threads, prompt+response texts", []
    if breakdown_rows and shape_rows:
        share = {r["category"]: r["share_of_wall"] for r in breakdown_rows if r["run"].startswith("default")}
        bw_share = {r["category"]: r["share_of_wall"] for r in breakdown_rows if r["run"].startswith("bf16 weights")}
        pct = lambda d, i: f"{100 * d[CATEGORIES[i]]:.0f} %"  # noqa: E731
        gap = next(v for k, v in share.items() if k.startswith("gap"))
        tok = share.get("tokenizer (timed alone)", 0.0)
        lin = [r for r in shape_rows if r["op"].endswith("_proj")]
        sdpa_row = next(r for r in shape_rows if r["op"] == "sdpa")
        causal_row = next(r for r in shape_rows if r["op"].startswith("sdpa, is_causal"))
        lin_peak = sum(r["executed_gflop"] for r in lin) / sum(r["bf16_s"] for r in lin)
        shape_all = shape_rows[-1]
        bf16_peak = peak["bfloat16"]
        reach = default["executed_gflops"] / shape_all["bf16_gflops"]
        useful_ceiling = default["useful_gflops"] * default["seconds"] / shape_all["bf16_s"]
        account = (f"what bounds it (profile of this call, share of wall): matmul kernels {pct(share, 0)}, autocast casts "
                   f"{pct(share, 1)}, SDPA {pct(share, 2)}, k/v clones {pct(share, 3)}, other elementwise (fp32 norms, RoPE, "
                   f"SiLU, residual) {pct(share, 4)}, tokenizer {100 * tok:.0f} %, Python/dispatcher gap {100 * gap:.0f} %; "
                   f"padding {100 * default['padding_share']:.0f} % of executed FLOPs. The model's own shapes cap it: its bf16 "
                   f"linears at this run's batches reach {lin_peak:.0f} GFLOP/s = {100 * lin_peak / bf16_peak:.0f} % of the "
                   f"2048² peak, linears + SDPA {shape_all['bf16_gflops']:.0f} = {100 * shape_all['bf16_gflops'] / bf16_peak:.0f} %"
                   f" (useful-FLOP ceiling {useful_ceiling:.0f} GFLOP/s = {100 * useful_ceiling / bf16_peak:.0f} %); the embedder "
                   f"runs at {100 * reach:.0f} % of that shape-limited rate. Masked SDPA is the slow kernel: "
                   f"{sdpa_row['bf16_gflops']:.0f} GFLOP/s ({causal_row['bf16_gflops']:.0f} causal without a mask)")
        account_notes = [
            f"Breakdown (default, {auto_threads.threads} thread(s)): the profiled call took "
            f"{next(r['seconds'] for r in breakdown_rows if r['category'] == 'wall (profiled)' and r['run'].startswith('default')):.3f} s "
            f"against {default['seconds']:.3f} s unprofiled; shares are of the profiled wall. All-bf16 decoder: matmul "
            f"{pct(bw_share, 0)}, casts {pct(bw_share, 1)}, SDPA {pct(bw_share, 2)}, clones {pct(bw_share, 3)}, "
            f"elementwise {pct(bw_share, 4)}.",
            f"Model shapes: {len(lin)} Linear shapes x {cfg.num_hidden_layers} layers + SDPA at this run's "
            f"{len(batch_tokens)} length-sorted batches (texts x longest: "
            f"{', '.join(f'{n} x {m}' for n, m in batch_tokens)}), best of 3 (2 with --quick), random data, {auto_threads.threads} thread(s): bf16 "
            f"{shape_all['bf16_s']:.3f} s for {shape_all['executed_gflop']:.0f} GFLOP ({shape_all['bf16_gflops']:.0f} GFLOP/s); "
            f"with fp32 activations cast by autocast (the shipped path) {shape_all['autocast_fp32_act_s']:.3f} s; with fp32 "
            f"weights cast at every call {shape_all['autocast_fp32_weight_s']:.3f} s. The embedder's whole call: "
            f"{default['seconds']:.3f} s.",
            f"Casting all {params / 1e6:.1f}M Linear weights fp32 -> bf16 once takes {cast_s:.3f} s: what autocast over fp32 "
            f"weights pays at every forward pass under inference_mode (autocast's cast cache is not used in inference "
            f"mode), i.e. {len(batch_tokens)} x {cast_s:.3f} s = {100 * len(batch_tokens) * cast_s / default['seconds']:.0f} % "
            f"of this call's time, and a larger share of a batch of short prompts; the shipped embedder keeps bf16 copies "
            f"of its Linear weights and does not pay it. What the `bf16 weights` row saves beyond that is the fp32 "
            f"residual stream: autocast keeps embeddings, norms, RoPE and residual adds in fp32 and casts every Linear's "
            f"and SDPA's input to bf16.",
            f"All-bf16 decoder (bf16 residual stream, not shipped) vs fp32 embeddings: min cosine {all_bf16_agree:.4f} "
            f"on 3 texts; autocast: {agree:.4f}.",
        ]
    best = max(rows, key=lambda r: r["ratio_vs_peak"])
    fastest = max(rows, key=lambda r: r["useful_gflops"])
    targets = [
        {"target": "embedding stage FLOP/s >= 50 % of the matmul peak of the dtype in use (default config)",
         "measured": f"{100 * default['ratio_vs_peak']:.0f} % ({default['useful_gflops']:.1f} of {default['peak_gflops']:.1f} "
                     f"GFLOP/s, {default['dtype']}, {default['threads']} thread(s))",
         "met": default["ratio_vs_peak"] >= 0.5, "note": account, "command": head["command"]},
        {"target": "embedding stage FLOP/s >= 50 % of the matmul peak of the dtype in use (best config)",
         "measured": f"{100 * best['ratio_vs_peak']:.0f} % ({best['useful_gflops']:.1f} GFLOP/s, {best['config']})",
         "met": best["ratio_vs_peak"] >= 0.5, "note": f"fastest row: {fastest['config']} at {fastest['useful_gflops']:.1f} GFLOP/s",
         "command": head["command"]},
    ]
    if train_rows:
        tbest = max(train_rows, key=lambda r: r["tokens_per_s"])
        targets.append({"target": "LoRA training tokens/s and FLOP/s vs the matmul peak (report)",
                        "measured": f"{tbest['tokens_per_s']:.0f} tokens/s, {tbest['useful_gflops']:.1f} GFLOP/s = "
                                    f"{100 * tbest['ratio_vs_peak']:.0f} % of {tbest['peak_gflops']:.1f} ({tbest['dtype']}, "
                                    f"{tbest['threads']} thread(s))", "met": None,
                        "note": "batch 4, max_seq_len 256, rank 8 q/k/v/o", "command": head["command"]})
    speedups = bf16_speedups(rows, train_rows, gen_rows)
    if speedups:
        targets.append({"target": "bf16 speed-up over fp32 per stage (report)",
                        "measured": "; ".join(f"{stage}: {', '.join(f'{x:.2f}x at {t} thread(s)' for t, x in per)}"
                                              for stage, per in speedups.items()), "met": None,
                        "note": "fp32 seconds / bf16 seconds, same texts and thread count (embedding: autocast rows; "
                                "generation: the shipped generate under autocast, which --dtype auto does not use for "
                                "decoding)", "command": head["command"]})
    notes = [
        f"Texts: {n_texts} prompt+response texts, {sum(lengths)} real tokens (mean {np.mean(lengths):.0f}, max {max(lengths)}); "
        f"useful work {flops / 1e12:.3f} TFLOP per pass. P = {params / 1e6:.1f}M Linear weights, L = {layers}, h = {width}, "
        f"LM head {lm_head / 1e6:.1f}M.",
        "`ratio_vs_peak` divides by the fastest 2048x2048 matmul of the row's dtype measured in this run (start or end, "
        "1 or 2 threads); `ratio_vs_matmul_same_threads` by the matmul at the row's own thread count.",
        f"auto here: dtype {auto_dtype.dtype} ({auto_dtype.reason}); threads {auto_threads.threads} ({auto_threads.reason}).",
        f"bf16 autocast embeddings vs fp32: min cosine {agree:.4f} on 3 texts (checked before timing).",
        "`padding_share`: share of executed FLOPs spent on padding tokens (by the count above).",
        "Each configuration runs once over all texts after a one-text warm-up; compare rows with their `load1`.",
        *account_notes,
        "Not tried: torch.compile (minutes of compilation on 2 cores for a 1-pass benchmark), int8 dynamic quantization "
        "(changes the embeddings).",
    ]
    C.write_results(name, args.quick, head, {"configs": rows, "breakdown": breakdown_rows, "model_shapes": shape_rows,
                                             "training": train_rows, "generation": gen_rows,
                                             "other_texts_and_embedders": extra_rows,
                                             "matmul": matmul_rows}, targets, notes, gate,
                    title="Embedding and LoRA training FLOP/s vs torch matmul of the same dtype")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
