"""Per-event features for the selection table, computed once per dataset, in resumable chunks.

Every selector in the table reads features of the event it is offered; none is recomputed per
cell. For each distinct ``(prompt, response)`` pair of the table's users:

- what the product computes (``embed.kind: lm``, prompt only, as under oracle annotation where the
  response arrives after the offer): SmolLM2's last-token hidden state over the prompt (truncated to
  ``embed_tokens``), the calibration-centred direction, EOE, DSS and the dominant lexicon domain,
  through the product's own embedder and :class:`operators.scoring.Scorer`;
- ``uncertainty`` (for ``uds``), from the same forward pass: the nuclear norm of the prompt's
  token-logit matrix (tokens x vocabulary) divided by its token count, via the eigenvalues of the
  small tokens x tokens Gram matrix;
- ``ifd`` (for ``ifd``): loss(answer | prompt) / loss(answer) at ``ifd_tokens`` tokens, rendered
  through the chat template exactly as training renders a pair (``models.train.example_losses``; the
  unconditioned loss is the answer after an empty user turn). It reads the reference answer, which
  the device only has after annotation.

Chunks of ``chunk`` pairs are written as ``<folder>/<start>.npz`` (directions in float16, enough for
cosine decisions) and may be committed, so that a new checkout resumes the work.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("selection")


@dataclass(frozen=True)
class FeatureConfig:
    embed_tokens: int = 128
    ifd_tokens: int = 128
    batch_size: int = 8
    chunk: int = 64

    def key(self) -> str:
        return f"e{self.embed_tokens}-i{self.ifd_tokens}-c{self.chunk}"


def pair_key(prompt: str, response: str) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([prompt, response]).encode()).hexdigest()[:20]


def distinct_pairs(users: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (prompt, response) pairs of the users' streams, in user-major stream order, so
    the first users' features are finished first."""
    seen: set[str] = set()
    pairs = []
    for u in users:
        for e in u["stream"]:
            k = pair_key(e["prompt"], e["response"])
            if k not in seen:
                seen.add(k)
                pairs.append((e["prompt"], e["response"]))
    return pairs


def prompt_pass(model: Any, tokenizer: Any, prompts: Sequence[str], cfg: FeatureConfig) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Raw last-token states (as ``LastTokenEmbedder`` computes them), token counts and uncertainty."""
    import torch

    from models.embed import _length_sorted_batches, _pad, _token_ids

    ids = _token_ids(tokenizer, list(prompts), cfg.embed_tokens)
    vectors = np.empty((len(ids), model.config.hidden_size), dtype=np.float32)
    uncertainty = np.empty(len(ids), dtype=np.float64)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    with torch.inference_mode():
        for batch in _length_sorted_batches([len(r) for r in ids], cfg.batch_size):
            input_ids, mask = _pad([ids[i] for i in batch], tokenizer.pad_token_id, tokenizer.padding_side)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
            last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
            vectors[batch] = hidden[torch.arange(len(batch)), last].float().numpy()
            for row, i in enumerate(batch):
                logits = head(hidden[row][mask[row].bool()]).double()  # (tokens, vocabulary)
                gram = logits @ logits.T  # tokens x tokens: its eigenvalues are the squared singular values
                singular = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
                uncertainty[i] = float(singular.sum()) / len(ids[i])
    return vectors, [len(r) for r in ids], uncertainty


def scoring_context(lm: Any, cfg: FeatureConfig) -> tuple[Any, np.ndarray]:
    """The product's scorer and the embedder's calibration mean, made once per run (not per chunk)."""
    from models.embed import EmbedConfig, make_embedder
    from operators.lexicons import load_lexicons
    from operators.scoring import Scorer

    embedder = make_embedder(EmbedConfig(kind="lm", max_tokens=cfg.embed_tokens, center=True), lm.model, lm.tokenizer)
    return Scorer(load_lexicons()), embedder._calibration_mean()


def compute_chunk(lm: Any, pairs: Sequence[tuple[str, str]], cfg: FeatureConfig,
                  context: tuple[Any, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    from models.train import example_losses
    from operators.events import Event

    scorer, center = context or scoring_context(lm, cfg)
    t0 = time.perf_counter()
    raw, n_tokens, uncertainty = prompt_pass(lm.model, lm.tokenizer, [p for p, _ in pairs], cfg)
    t1 = time.perf_counter()
    scored = [scorer.score(Event(f"p{i}", "u", 0, p, None), v, n, center=center)
              for i, ((p, _), v, n) in enumerate(zip(pairs, raw, n_tokens))]
    conditioned = example_losses(lm.model, lm.tokenizer, list(pairs), cfg.ifd_tokens, cfg.batch_size)
    alone = example_losses(lm.model, lm.tokenizer, [("", a) for _, a in pairs], cfg.ifd_tokens, cfg.batch_size)
    t2 = time.perf_counter()
    return {
        "keys": np.array([pair_key(p, a) for p, a in pairs]),
        "directions": np.stack([s.embedding for s in scored]).astype(np.float16),
        "eoe": np.array([s.eoe for s in scored]), "dss": np.array([s.dss for s in scored]),
        "domains": np.array([s.domain for s in scored]), "n_tokens": np.array(n_tokens),
        "uncertainty": uncertainty, "answer_loss": np.array(conditioned), "answer_loss_alone": np.array(alone),
        "ifd": np.array(conditioned) / np.maximum(np.array(alone), 1e-9),
        "embed_seconds": np.array(t1 - t0), "ifd_seconds": np.array(t2 - t1),
    }


def ensure_features(lm: Any, pairs: Sequence[tuple[str, str]], folder: Path, cfg: FeatureConfig) -> None:
    """Compute every missing chunk of ``pairs`` into ``folder``."""
    from operators.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(pairs), cfg.chunk)
    context = None
    for k, start in enumerate(starts):
        part = folder / f"{start:06d}.npz"
        if part.is_file():
            continue
        chunk = pairs[start : start + cfg.chunk]
        context = context or scoring_context(lm, cfg)
        arrays = compute_chunk(lm, chunk, cfg, context)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write(part, buffer.getvalue())
        log.info("features %s: chunk %d/%d (%d pairs): embed %.0f s, ifd %.0f s", folder.name, k + 1, len(starts),
                 len(chunk), float(arrays["embed_seconds"]), float(arrays["ifd_seconds"]))


@dataclass
class Features:
    """Features by pair key."""

    index: dict[str, int]
    arrays: dict[str, np.ndarray]

    def row(self, prompt: str, response: str) -> int:
        return self.index[pair_key(prompt, response)]


def load_features(folder: Path, pairs: Sequence[tuple[str, str]], cfg: FeatureConfig) -> Features:
    parts = [folder / f"{start:06d}.npz" for start in range(0, len(pairs), cfg.chunk)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise RuntimeError(f"{folder}: {len(missing)} feature chunks missing (first {missing[0]}); run the features step")
    loaded = [np.load(p, allow_pickle=False) for p in parts]
    names = [n for n in loaded[0].files if n not in ("embed_seconds", "ifd_seconds")]
    arrays = {n: np.concatenate([part[n] for part in loaded]) for n in names}
    arrays["directions"] = arrays["directions"].astype(np.float32)
    arrays["directions"] /= np.maximum(np.linalg.norm(arrays["directions"], axis=1, keepdims=True), 1e-12)
    keys = [str(k) for k in arrays.pop("keys")]
    if keys != [pair_key(p, a) for p, a in pairs]:
        raise RuntimeError(f"{folder}: feature chunks do not match the streams' pairs; delete the folder and rerun")
    return Features({k: i for i, k in enumerate(keys)}, arrays)
