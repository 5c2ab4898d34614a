"""One user's personalization run: synthesize, fine-tune, evaluate, gate, version.

A training request carries the user's labeled buffer. The run

1. holds out a probe: every sample whose id hashes into 1 of ``probe_every``
   buckets (stable across runs, so a probe sample is never trained on later);
2. synthesizes ``k`` similar pairs per remaining sample with the base model
   (cached per source sample: a sample's pairs leave with it, since only the
   current buffer's samples are looked up);
3. trains LoRA on real + synthetic pairs, warm-started from the user's latest
   adapter (the buffer is the replay that limits forgetting);
4. measures probe loss before/after and the general-probe loss, writes the
   version with its manifest, and promotes it only if the gate passes.

A request is delivered at least once: after a crash the stream re-emits the windows
it closed since its last checkpoint, and the trainer's journal re-runs what was
queued or training. A request whose window and training set match a version
already saved is a repeat: it trains nothing, and only finishes that version's gate
if the process stopped between saving and gating it. So a crash never adds a
version, nor trains a window twice.

The runner owns a private copy of the base model: the stream keeps embedding
with the original while a run trains, generates and wraps its copy in LoRA.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from models.adapters import AdapterStore, Evaluation, Manifest, promotion_gate, training_data_digest
from models.general_probe import GENERAL_PROBE
from models.train import TrainConfig, mean_loss, train_lora
from operators.config import ModelSettings, SynthConfig, TrainSettings

log = logging.getLogger(__name__)


_SYNTH, _TRAIN = SynthConfig(), TrainSettings()  # the defaults live in the settings tree


@dataclass(frozen=True)
class PersonalizeConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    synth_k: int = _SYNTH.k
    synth_tokens_per_pair: int = _SYNTH.tokens_per_pair
    synth_low: float = _SYNTH.low
    synth_high: float = _SYNTH.high
    synth_dedup: float = _SYNTH.dedup
    probe_every: int = _TRAIN.probe_every
    gate_tolerance: float = _TRAIN.gate_tolerance
    warm_start: bool = True
    base_model_id: str = ModelSettings().lm

    def __post_init__(self) -> None:
        if self.probe_every < 2:
            raise ValueError(f"PersonalizeConfig.probe_every={self.probe_every} must be >= 2 (one in N samples is held out)")
        if self.synth_k < 0:
            raise ValueError(f"PersonalizeConfig.synth_k={self.synth_k} must be >= 0; 0 disables synthesis")


@dataclass
class RunResult:
    user_id: str
    outcome: str  # "promoted" | "rejected" | "skipped"
    reason: str
    version: int | None = None
    n_real: int = 0
    n_synthetic: int = 0
    n_probe: int = 0
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)


def is_probe(event_id: str, probe_every: int) -> bool:
    """Stable hold-out: the same id is a probe sample in every run.

    >>> [is_probe(f"e{i}", 4) for i in range(8)].count(True)
    2
    """
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:4], "big") % probe_every == 0


class Personalizer:
    """Runs training requests for any user against one private base model."""

    def __init__(self, model: Any, tokenizer: Any, store: AdapterStore, config: PersonalizeConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.config = config
        self._synthetic: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._general_base: float | None = None
        self._weights_digest: str | None = None

    def run(self, request: dict[str, Any]) -> RunResult:
        start = time.perf_counter()
        cfg, user = self.config, request["user_id"]
        self._digest()  # of the plain base model: train_lora below wraps it, and its state dict then holds LoRA too
        samples = request["samples"]
        probe_samples = [s for s in samples if is_probe(s["event_id"], cfg.probe_every)]
        probe_ids = [s["event_id"] for s in probe_samples]
        probe = [(s["prompt"], s["response"]) for s in probe_samples]
        train = [s for s in samples if not is_probe(s["event_id"], cfg.probe_every)]
        if not train:
            return RunResult(user, "skipped", f"no labeled training samples among {len(samples)}", n_probe=len(probe))
        synthetic = self._synthesize(user, train)
        examples = [(s["prompt"], s["response"]) for s in train] + [pair for _, pair in synthetic]
        # The digest names every sample: real ones by event id, synthetic ones by their source's id.
        identified = [(s["event_id"], f"{s['prompt']}\x00{s['response']}") for s in train]
        identified += [(f"{src}#syn{i}", f"{q}\x00{a}") for i, (src, (q, a)) in enumerate(synthetic)]

        current = self.store.latest(user)
        init = self.store.path(user, current) if (current is not None and cfg.warm_start) else None
        data_digest = training_data_digest(identified)
        train_config = cfg.train.to_dict() | {"warm_start_from": current if init else None}
        repeat = self._trained_already(user, request.get("window"), data_digest, probe_ids, train_config)
        if repeat is not None:
            return self._finish(user, repeat, len(probe))
        same = self._same_run_as(user, data_digest, probe_ids, train_config)
        if same is not None:
            return RunResult(user, "skipped", f"same training set, probe, starting point and config as v{same.version} "
                             f"({same.status}): it would train the same adapter", n_real=len(train),
                             n_synthetic=len(synthetic), n_probe=len(probe))
        probe_before = self._loss_with(current, user, probe) if probe else None
        if self._general_base is None:
            self._general_base = mean_loss(self.model, self.tokenizer, GENERAL_PROBE, cfg.train.max_seq_len)

        peft_model, report = train_lora(self.model, self.tokenizer, examples, cfg.train, init_adapter=init)
        try:
            probe_after = mean_loss(peft_model, self.tokenizer, probe, cfg.train.max_seq_len) if probe else None
            general = mean_loss(peft_model, self.tokenizer, GENERAL_PROBE, cfg.train.max_seq_len)
            ids = [s["event_id"] for s in train]
            manifest = Manifest(
                user_id=user,
                base_model=cfg.base_model_id,
                base_weights_digest=self._digest(),
                data_digest=data_digest,
                sample_ids=ids,
                n_real=len(train),
                n_synthetic=len(synthetic),
                seed=cfg.train.seed,
                train_config=train_config,
                train_report=report.to_dict(),
                evaluation=Evaluation(probe_before, probe_after, self._general_base, general),
                probe_ids=probe_ids,
                window=request.get("window"),
            )
            version = self.store.save(user, peft_model, manifest)
        finally:
            peft_model.unload()  # the plain base model again, for the next user

        ok, reason = self._verdict(probe_after, probe_before)
        if ok:
            self.store.promote(user, version)
        else:
            self.store.reject(user, version, reason)
        return RunResult(user, "promoted" if ok else "rejected", reason, version, len(train), len(synthetic), len(probe),
                         time.perf_counter() - start, report.to_dict())

    def _verdict(self, probe_after: float | None, probe_before: float | None) -> tuple[bool, str]:
        if probe_after is None:
            return True, "no probe samples yet: promoted on training alone"
        return promotion_gate(probe_after, probe_before, self.config.gate_tolerance)

    def _trained_already(self, user: str, window: int | None, data_digest: str, probe_ids: list[str],
                         train_config: dict) -> Manifest | None:
        """The version already trained for this very request (same window, training set, probe, config), if any.

        The starting point is left out of the comparison: a re-delivered window finds the
        version it made as the user's latest, so it would now start from it.
        """
        if window is None:
            return None

        def key(config: dict) -> dict:
            return {k: v for k, v in config.items() if k != "warm_start_from"}

        for m in reversed(self.store.list(user)):
            if (m.window == window and m.data_digest == data_digest and m.probe_ids == probe_ids
                    and key(m.train_config) == key(train_config) and m.base_weights_digest == self._digest()):
                return m
        return None

    def _finish(self, user: str, m: Manifest, n_probe: int) -> RunResult:
        """A repeated request: apply the gate to its version if a stopped process left it a candidate."""
        counts = {"version": m.version, "n_real": m.n_real, "n_synthetic": m.n_synthetic, "n_probe": n_probe}
        if m.status == "candidate":
            ok, reason = self._verdict(m.evaluation.probe_loss_after, m.evaluation.probe_loss_before)
            if ok:
                self.store.promote(user, m.version)
            else:
                self.store.reject(user, m.version, reason)
            return RunResult(user, "promoted" if ok else "rejected",
                             f"v{m.version} of window {m.window} was saved by a run that stopped before its gate: "
                             f"{reason}", **counts)
        versions = self.store.list(user)
        if m.status == "promoted" and self.store.latest(user) != m.version and versions[-1].version == m.version:
            self.store.promote(user, m.version)  # the stop came between its status and the latest pointer
        return RunResult(user, "skipped", f"window {m.window} was trained already as v{m.version} ({m.status}): "
                         "a request delivered again after a restart", **counts)

    def _loss_with(self, version: int | None, user: str, pairs: list[tuple[str, str]]) -> float:
        if version is None:
            return mean_loss(self.model, self.tokenizer, pairs, self.config.train.max_seq_len)
        from peft import PeftModel

        from models.adapters import verify_adapter_files

        path = self.store.path(user, version)
        verify_adapter_files(path)  # a tampered latest fails the run (kept in the journal), never trains on
        wrapped = PeftModel.from_pretrained(self.model, str(path))
        try:
            return mean_loss(wrapped, self.tokenizer, pairs, self.config.train.max_seq_len)
        finally:
            wrapped.unload()

    def _synthesize(self, user: str, train: list[dict[str, Any]]) -> list[tuple[str, tuple[str, str]]]:
        """``(source event id, (question, answer))`` for every synthetic pair of the current samples.

        Samples without pairs yet are synthesized together, 8 prompts per generate call.
        """
        cfg = self.config
        if cfg.synth_k == 0:
            return []
        from models.synth import synth_gen_config, synthesize_many
        from operators import metrics
        from operators.synthesis import SynthFilter

        current = {(user, s["event_id"]) for s in train}
        # Pairs of samples that left the buffer leave the cache with them.
        for key in [k for k in self._synthetic if k[0] == user and k not in current]:
            del self._synthetic[key]
        todo = [s for s in train if (user, s["event_id"]) not in self._synthetic]
        if todo:
            gen = synth_gen_config(cfg.synth_k, seed=cfg.train.seed, max_new_tokens_per_pair=cfg.synth_tokens_per_pair)
            gen = replace(gen, batch_size=8)
            filt = SynthFilter(low=cfg.synth_low, high=cfg.synth_high, dedup=cfg.synth_dedup)
            results = synthesize_many(self.model, self.tokenizer, [(s["prompt"], s["response"]) for s in todo],
                                      cfg.synth_k, gen, filt)
            for s, result in zip(todo, results):
                self._synthetic[(user, s["event_id"])] = result.pairs
                metrics.SYNTH_SECONDS.observe(result.seconds)
                metrics.SYNTHETIC_PAIRS.labels(outcome="kept").inc(len(result.pairs))
                for reason, n in result.dropped.items():
                    metrics.SYNTHETIC_PAIRS.labels(outcome=reason).inc(n)
        out: list[tuple[str, tuple[str, str]]] = []
        for s in train:
            out.extend((s["event_id"], pair) for pair in self._synthetic[(user, s["event_id"])])
        return out

    def _same_run_as(self, user: str, data_digest: str, probe_ids: list[str], train_config: dict) -> Manifest | None:
        """The user's newest version if this run would repeat it exactly, else ``None``.

        Training is seeded, so the same samples, base weights, starting adapter and config give the same
        adapter, and the same probe gives the same gate verdict: a window that closes on an unchanged
        buffer (late in a stream most events are rejected) would only write a copy.
        """
        versions = self.store.list(user)
        if not versions:
            return None
        last = versions[-1]
        same = (last.data_digest == data_digest and last.probe_ids == probe_ids and last.train_config == train_config
                and last.base_weights_digest == self._digest())
        return last if same else None

    def _digest(self) -> str:
        """sha256 of the base model's weights; first called at the start of a run, before any LoRA wrapping."""
        if self._weights_digest is None:  # hashing 135M weights takes a moment: once per process
            from models.lm import weights_digest

            self._weights_digest = weights_digest(self.model)
        return self._weights_digest
