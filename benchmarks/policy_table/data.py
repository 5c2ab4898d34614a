"""The stream and test split of a dataset, and its cache: the parsed events and, per stream event,
the LM embedding with EOE, DSS and dominant domain. Embedding is resumable in chunks."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from operators.files import atomic_write

from .plan import TEST_TURNS, TableConfig

if TYPE_CHECKING:
    from .model import LM

log = logging.getLogger("policy_table")


def load_split(dataset: str, stream: int, test: int, test_turns: str = "all") -> tuple[list[dict], list[dict]]:
    """The first ``stream`` labeled events of one user, and ``test`` held-out ones after them.

    A test event must come from a conversation that has no event in the stream; ``test_turns``
    (see :data:`TEST_TURNS`) says which of a conversation's turns are taken.
    """
    from flows.replay import replay_events
    from operators.events import Event, parse_event

    if test_turns not in TEST_TURNS:
        raise ValueError(f"test_turns={test_turns!r} is not one of {list(TEST_TURNS)}")
    stream_events: list[dict] = []
    test_events: list[dict] = []
    seen_conversations: set[str] = set()
    pending: list[dict] = []  # "middle"/"validation": the turns of the conversation being read
    after: list[str] = []  # the conversations after the stream, in order

    def close_conversation() -> None:
        if pending:
            test_events.append(pending[len(pending) // 2])
            pending.clear()

    for raw in replay_events(dataset, n_users=1, split="round_robin", seed=0):
        event = parse_event(raw)
        if not isinstance(event, Event) or event.response is None:
            continue
        conversation = str(event.meta.get("conversation", event.event_id))
        record = {"event_id": event.event_id, "prompt": event.prompt, "response": event.response,
                  "conversation": conversation}
        if len(stream_events) < stream:
            stream_events.append(record)
            seen_conversations.add(conversation)
        elif conversation in seen_conversations:
            continue  # its context was streamed
        else:
            if not after or after[-1] != conversation:
                after.append(conversation)
            if test_turns == "all":
                test_events.append(record)
            elif test_turns == "middle" or len(after) > test:  # validation: past the test sets' conversations
                if pending and pending[0]["conversation"] != conversation:
                    close_conversation()
                pending.append(record)
        if len(test_events) == test:
            break
    if test_turns != "all" and len(test_events) < test:
        close_conversation()  # the dataset ended inside the last test conversation
    if len(stream_events) < stream or len(test_events) < test:
        raise ValueError(
            f"dataset {dataset!r} has only {len(stream_events)} stream and {len(test_events)} test events; "
            f"asked for --stream {stream} --test {test}"
        )
    return stream_events, test_events


@dataclass
class Features:
    """Per stream event: normalised centered embedding, EOE, DSS, dominant domain, LM tokens."""

    directions: np.ndarray
    eoe: np.ndarray
    dss: np.ndarray
    domains: list[str]
    n_tokens: np.ndarray


@dataclass
class DatasetCache:
    stream: list[dict]
    test: list[dict]
    features: Features
    embed_seconds: float
    tokens_per_s: float


def _atomic_npz(path: Path, **arrays: Any) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def prepare_dataset(cfg: TableConfig, dataset: str, out: Path, lm: LM | None, chunk: int = 64) -> DatasetCache:
    """Load or build the dataset's cache; embedding runs in resumable chunks of ``chunk`` events."""
    folder = cache_root(out) / dataset / cfg.data_key()
    events_file, features_file = folder / "events.json", folder / "features.npz"
    if not events_file.is_file():
        stream, test = load_split(dataset, cfg.stream, cfg.test, cfg.test_turns)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(events_file, json.dumps({"stream": stream, "test": test}, ensure_ascii=False).encode())
    split = json.loads(events_file.read_text())
    stream, test = split["stream"], split["test"]
    if not features_file.is_file():
        if lm is None:
            raise RuntimeError("prepare_dataset needs the model to embed the stream")
        _embed_and_score(stream, chunk_folder(cfg, out, dataset), features_file, lm, cfg, chunk)
    saved = np.load(features_file, allow_pickle=False)
    features = Features(saved["directions"], saved["eoe"], saved["dss"], [str(d) for d in saved["domains"]],
                        saved["n_tokens"])
    return DatasetCache(stream, test, features, float(saved["embed_seconds"]), float(saved["tokens_per_s"]))


_CACHE_ROOT: Path | None = None  # --cache; None: <out>/cache


def set_cache_root(folder: Path | None) -> None:
    """Where the per-dataset cache lives: ``folder`` (``--cache``, shared by several tables), or
    ``None`` for each table's own ``<out>/cache``."""
    global _CACHE_ROOT
    _CACHE_ROOT = folder


def cache_root(out: Path) -> Path:
    return _CACHE_ROOT if _CACHE_ROOT is not None else out / "cache"


def chunk_folder(cfg: TableConfig, out: Path, dataset: str, chunk: int = 64) -> Path:
    return cache_root(out) / dataset / cfg.embed_key() / f"chunks{chunk}"


def chunk_files(cfg: TableConfig, out: Path, dataset: str, chunk: int = 64) -> list[Path]:
    """The embedding chunks that lie inside this configuration's stream, in order (may be partial)."""
    folder = chunk_folder(cfg, out, dataset, chunk)
    names = [f"{start:06d}-{min(chunk, cfg.stream - start)}.npz" for start in range(0, cfg.stream, chunk)]
    return [folder / n for n in names if (folder / n).is_file()]


def _embed_and_score(stream: list[dict], parts: Path, features_file: Path, lm: LM, cfg: TableConfig, chunk: int) -> None:
    from models.embed import EmbedConfig, make_embedder
    from operators.events import Event
    from operators.lexicons import load_lexicons
    from operators.scoring import Scorer

    embedder = make_embedder(EmbedConfig(kind="lm", max_tokens=cfg.embed_max_tokens, center=True), lm.model, lm.tokenizer)
    scorer = Scorer(load_lexicons())
    # A part is named by its first position and its length, and the chunk size names the folder,
    # so parts of another size, or a shorter final part of a shorter stream, are never mixed in.
    names = [f"{start:06d}-{min(chunk, len(stream) - start)}.npz" for start in range(0, len(stream), chunk)]
    for start, name in zip(range(0, len(stream), chunk), names):
        part = parts / name
        if part.is_file():
            continue
        events = [Event(e["event_id"], "user-0", 0, e["prompt"], e["response"]) for e in stream[start : start + chunk]]
        t0 = time.perf_counter()
        embedded = embedder.embed([e.text for e in events])
        seconds = time.perf_counter() - t0
        scored = [scorer.score(e, v, n, center=embedded.mean)
                  for e, v, n in zip(events, embedded.vectors, embedded.n_tokens)]
        _atomic_npz(part, directions=np.stack([s.embedding for s in scored]).astype(np.float32),
                    eoe=np.array([s.eoe for s in scored]), dss=np.array([s.dss for s in scored]),
                    domains=np.array([s.domain for s in scored]), n_tokens=np.array(embedded.n_tokens),
                    seconds=np.array(seconds), event_ids=np.array([e.event_id for e in events]))
        done = min(start + chunk, len(stream))
        log.info("embedded %d/%d events (%.1f s for %d, %.0f tokens/s)", done, len(stream), seconds, len(events),
                 sum(embedded.n_tokens) / max(seconds, 1e-9))
    loaded = [np.load(parts / name, allow_pickle=False) for name in names]
    ids = [str(i) for p in loaded for i in p["event_ids"]]
    if ids != [e["event_id"] for e in stream]:
        raise RuntimeError(f"embedding chunks in {parts} do not match the stream's events; delete the folder and rerun")
    n_tokens = np.concatenate([p["n_tokens"] for p in loaded])
    seconds = float(sum(float(p["seconds"]) for p in loaded))
    _atomic_npz(features_file,
                directions=np.concatenate([p["directions"] for p in loaded]),
                eoe=np.concatenate([p["eoe"] for p in loaded]), dss=np.concatenate([p["dss"] for p in loaded]),
                domains=np.concatenate([p["domains"] for p in loaded]), n_tokens=n_tokens,
                embed_seconds=np.array(seconds), tokens_per_s=np.array(float(n_tokens.sum()) / max(seconds, 1e-9)))
