"""Realistic user streams, built from the real offline datasets, and their iid controls.

A bundled dataset replayed in file order is close to iid: under iid arrival a uniform sample is
already near-optimal, so a selector has little room to help. A real user's log is not like that.
This module builds, per dataset, users whose streams have the properties a device sees, each from
the data itself and each behind a seeded, documented knob of :class:`StreamSpec`:

- **topic bursts with drift**: a user returns to a few favourite topics in sessions of several
  conversations on one topic (``burst_mean``); the favourites change over the user's period
  (``phases``: at each phase one favourite is swapped for a new one);
- **a long tail of rare topics**: every other topic keeps a small share (``tail_share``);
- **repeats and paraphrases**: an earlier prompt asked again with its answer (``repeat_rate``), or
  a *different* conversation's prompt whose MiniLM cosine to an earlier prompt of the user is at
  least ``paraphrase_min_cos`` (``paraphrase_rate``): a real paraphrase from the data, not a
  rewrite of ours;
- **low-value turns**: greetings, thanks, "continue", one-word follow-ups, taken from the data
  where they occur (:func:`is_low_value`), inserted between turns (``low_value_rate``) on top of
  those that the conversations hold themselves;
- **the iid control**: the same events in a uniformly shuffled order (``iid``), so the two kinds
  of stream differ only in arrival order: same events, same whole-stream row, same test set.

**Topics** come from a source independent of every score under test (EOE and IDD use SmolLM2's
hidden states, DSS WordNet lexicons): chitchat's own structure (each conversation was collected
for one of 35 conversation-starter prompts, the record's ``prompt`` field) and, for ShareGPT,
which has no topic field, k-means clusters (``sharegpt_topics``) of all-MiniLM-L6-v2 embeddings of
each conversation's first human turn. MiniLM is not the embedder of any policy in the table.

**Test sets** represent the user's whole period: while the stream is built, each conversation the
user starts goes to the test pool instead with probability ``heldout``, so held-out conversations
are spread over every phase and topic the user had, and never appear in the stream. One turn per
held-out conversation is a test prompt if it passes :func:`held_out_turn`. Users never share a
conversation.

>>> is_low_value("Thanks!"), is_low_value("continue"), is_low_value("ok so what now"), is_low_value("Explain LoRA ranks")
(True, True, False, False)
>>> content_prompt("continue please"), content_prompt("Write a haiku about autumn leaves")
(False, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("selection")

# Phatic or content-free prompts, matched on the whole normalised prompt (lower case, punctuation
# dropped). A prompt of at most two words also counts ("ok", "why?", "lol yeah"): it cannot be
# answered without its context.
LOW_VALUE_PHRASES = frozenset({
    "hi", "hello", "hey", "hiya", "yo", "sup", "howdy", "greetings", "morning", "good morning", "good evening",
    "good night", "hi there", "hello there", "hey there", "hows it going", "how are you", "how are you doing",
    "how are you today", "hi how are you", "hello how are you", "hey how are you", "whats up", "thanks",
    "thank you", "thank you so much", "thanks a lot", "many thanks", "thx", "ty", "ok", "okay", "k", "cool",
    "nice", "great", "good", "awesome", "perfect", "yes", "yeah", "yep", "yup", "no", "nope", "nah", "sure",
    "alright", "all right", "fine", "lol", "haha", "hahaha", "lmao", "wow", "omg", "hmm", "bye", "goodbye",
    "see you", "see ya", "later", "continue", "go on", "keep going", "tell me more", "more", "next", "again",
    "please continue", "continue please", "go ahead", "and then", "what else", "why", "how", "really", "same",
    "me too", "i see", "i agree", "true", "right", "exactly", "interesting", "hello how are you doing",
    "hi how are you doing", "hello how are you today", "hi how are you today", "im good how are you",
    "good how are you", "im fine how are you", "not bad how are you",
})


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed.

    >>> normalise("  Thank you!!  So much. ")
    'thank you so much'
    """
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower().replace("'", "")).split())


def is_low_value(prompt: str) -> bool:
    """A greeting, thanks, "continue" or a one/two-word follow-up: no content of its own."""
    norm = normalise(prompt)
    return not norm or norm in LOW_VALUE_PHRASES or len(norm.split()) <= 2


def content_prompt(prompt: str, min_words: int = 5) -> bool:
    """Not low-value and at least ``min_words`` words."""
    return not is_low_value(prompt) and len(normalise(prompt).split()) >= min_words


def held_out_turn(dataset: str, turns: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The one test prompt a held-out conversation gives, or ``None``.

    The documented rule for context-free prompts: the conversation's first *content* turn
    (:func:`content_prompt`: not low-value, >= 5 words). ShareGPT: only its opening turn qualifies;
    a later turn ("make it shorter", "and the second one?") leans on context the test prompt does not
    carry. Chitchat: its opening turns are mostly greetings, so the first content turn among the first
    three (messages 0, 2, 4: small talk that has barely started) qualifies.

    >>> held_out_turn("sharegpt", [{"prompt": "hi", "turn": 0}, {"prompt": "Write a haiku about autumn leaves", "turn": 2}])
    >>> held_out_turn("chitchat", [{"prompt": "hi", "turn": 0}, {"prompt": "Write a haiku about autumn leaves", "turn": 2}])["turn"]
    2
    """
    window = turns[:1] if dataset == "sharegpt" else turns[:3]
    return next((t for t in window if content_prompt(t["prompt"])), None)


@dataclass(frozen=True)
class StreamSpec:
    """The knobs of one dataset's users. Every random choice derives from ``seed``."""

    users: int = 6  # users in the table
    validation_users: int = 2  # further users, built the same way, for choosing a rule (never the table's)
    length: int = 1200  # stream events per user
    heldout: float = 0.25  # chance a started conversation goes to the user's test pool instead
    test_per_user: int = 50  # test prompts per user (drawn uniformly from the pool's qualifying turns)
    favourites: int = 3  # topics a user returns to at any time
    phases: int = 3  # the favourites drift: one is swapped at each new phase
    favourite_share: float = 0.75  # share of sessions on a favourite (Zipf 1/rank among them)
    tail_share: float = 0.25  # the rest: any other topic, uniformly (the long tail)
    burst_mean: float = 2.5  # conversations per session, geometric with this mean
    max_turns: int = 12  # turns kept per conversation (long ShareGPT chats would fill a stream alone)
    repeat_rate: float = 0.06  # per event: ask one of the user's earlier prompts again
    paraphrase_rate: float = 0.04  # per event: a data paraphrase of an earlier prompt
    paraphrase_min_cos: float = 0.85
    low_value_rate: float = 0.20  # per event: a low-value turn from the data's pool
    sharegpt_topics: int = 40
    max_conversations: int = 0  # 0: the whole dataset (a smaller pool is for smoke runs only)
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# --- the data: conversations with a topic -------------------------------------------------


def load_conversations(dataset: str) -> list[dict[str, Any]]:
    """Every conversation with at least one labeled turn: ``{"id", "topic", "turns": [...]}``.

    A turn is ``{"event_id", "prompt", "response", "turn"}``, in conversation order, labeled only.
    Chitchat's topic is its record's conversation-starter prompt; ShareGPT's is filled in by
    :func:`cluster_topics`.
    """
    from flows.replay import iter_dataset
    from operators.events import Event, parse_event
    from operators.formats import to_events

    conversations: list[dict[str, Any]] = []
    for index, record in enumerate(iter_dataset(dataset)):
        if not isinstance(record, dict):
            continue
        turns = []
        for raw in to_events(record, index):
            if not isinstance(raw, dict) or not raw.get("response"):
                continue
            event = parse_event({**raw, "user_id": "u", "ts": 0})
            if not isinstance(event, Event):  # what the validator rejects could not be trained on either
                continue
            turns.append({"event_id": event.event_id, "prompt": event.prompt, "response": event.response,
                          "turn": int(raw["meta"]["turn"])})
        if turns:
            topic = record.get("prompt") if dataset == "chitchat" else None
            conversations.append({"id": str(record.get("id", index)), "topic": topic or "none", "turns": turns})
    return conversations


def minilm_vectors(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 vectors (the product's sentence embedder, 128 tokens)."""
    from models.embed import EmbedConfig, SentenceEmbedder
    from models.lm import LMConfig, load_lm

    _, lm_tokenizer = load_lm(LMConfig(model="tiny-random"))  # token counts only; never used here
    embedder = SentenceEmbedder(EmbedConfig(kind="minilm", max_tokens=128, center=False, batch_size=batch_size),
                                lm_tokenizer)
    vectors = embedder.embed(list(texts)).vectors.astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def cluster_topics(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means (FAISS, spherical) topic ids of unit vectors."""
    import faiss

    km = faiss.Kmeans(vectors.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    km.train(vectors)
    _, labels = km.index.search(vectors, 1)
    return labels[:, 0]


# --- users -------------------------------------------------------------------------------


def build_users(dataset: str, spec: StreamSpec, conversations: list[dict[str, Any]],
                prompt_vectors: np.ndarray, prompt_owner: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """``spec.users + spec.validation_users`` users, each ``{"user", "split", "stream", "iid", "test"}``.

    ``prompt_vectors[j]`` is the MiniLM vector of turn ``prompt_owner[j] = (conversation, turn index)``
    (the paraphrase search space); low-value turns are drawn from every conversation.
    """
    rng = np.random.default_rng([spec.seed, 0x5E1EC7])
    by_topic: dict[str, list[int]] = defaultdict(list)
    for ci, conv in enumerate(conversations):
        by_topic[conv["topic"]].append(ci)
    topics = sorted(by_topic)
    for t in topics:
        rng.shuffle(by_topic[t])
    taken: set[int] = set()  # conversations given to some user (stream or test)

    low_pool = [(ci, ti) for ci, conv in enumerate(conversations) for ti, turn in enumerate(conv["turns"])
                if is_low_value(turn["prompt"])]
    rng.shuffle(low_pool)
    low_cursor = 0

    users = []
    row_of = {owner: j for j, owner in enumerate(prompt_owner)}  # (conversation, turn) -> its MiniLM row
    n_all = spec.users + spec.validation_users
    # Favourite topics of different users overlap as little as the topic count allows.
    order = list(rng.permutation(len(topics)))
    for u in range(n_all):
        name = f"{dataset}-{'val' if u >= spec.users else 'u'}{u}"
        need = spec.favourites + spec.phases - 1
        fav_ids = [order[(u * need + j) % len(order)] for j in range(need)]
        phase_favs = [[topics[i] for i in fav_ids[p : p + spec.favourites]] for p in range(spec.phases)]
        stream: list[dict[str, Any]] = []
        pool: list[dict[str, Any]] = []  # held-out conversations' candidate test turns
        asked: list[tuple[int, int]] = []  # (conversation, turn) of this user's streamed prompts
        asked_rows: list[int] = []  # their rows in prompt_vectors, where they have one
        n_sessions = 0

        def emit(event: dict[str, Any]) -> None:
            event["seq"] = len(stream)
            stream.append(event)

        def next_conversation(topic: str) -> int | None:
            for ci in by_topic[topic]:
                if ci not in taken:
                    taken.add(ci)
                    return ci
            return None

        while len(stream) < spec.length:
            phase = min(spec.phases - 1, len(stream) * spec.phases // spec.length)
            favs = phase_favs[phase]
            if rng.random() < spec.favourite_share / (spec.favourite_share + spec.tail_share):
                zipf = np.array([1.0 / (r + 1) for r in range(len(favs))])
                topic = favs[int(rng.choice(len(favs), p=zipf / zipf.sum()))]
                kind = "favourite"
            else:
                others = [t for t in topics if t not in favs]
                topic, kind = others[int(rng.integers(len(others)))], "tail"
            n_sessions += 1
            burst = int(rng.geometric(1.0 / spec.burst_mean))
            for _ in range(burst):
                ci = next_conversation(topic)
                if ci is None:
                    break
                conv = conversations[ci]
                if rng.random() < spec.heldout:
                    t = held_out_turn(dataset, conv["turns"])
                    if t is not None:
                        pool.append({"conversation": conv["id"], "topic": topic, "position": len(stream), **t})
                    continue
                for ti, turn in enumerate(conv["turns"][: spec.max_turns]):
                    if len(stream) >= spec.length:
                        break
                    emit({**turn, "event_id": turn["event_id"], "conversation": conv["id"], "topic": topic,
                          "session": n_sessions, "topic_kind": kind, "kind": "turn"})
                    asked.append((ci, ti))
                    if (ci, ti) in row_of:
                        asked_rows.append(row_of[(ci, ti)])
                    # Between turns: the user's own repeats, paraphrases and chatter.
                    r = rng.random()
                    if asked and r < spec.repeat_rate and len(stream) < spec.length:
                        oc, ot = asked[int(rng.integers(len(asked)))]
                        src = conversations[oc]
                        t = src["turns"][ot]
                        emit({**t, "event_id": f"{t['event_id']}#r{len(stream)}", "conversation": src["id"],
                              "topic": src["topic"], "session": n_sessions, "topic_kind": "repeat", "kind": "repeat",
                              "repeat_of": t["event_id"]})
                    elif r < spec.repeat_rate + spec.paraphrase_rate and asked_rows and len(stream) < spec.length:
                        para = _paraphrase(rng, asked_rows, prompt_vectors, prompt_owner, taken, spec.paraphrase_min_cos)
                        if para is not None:
                            (pc, pt), of_row = para
                            src, orig = conversations[pc], conversations[prompt_owner[of_row][0]]
                            taken.add(pc)
                            t = src["turns"][pt]
                            emit({**t, "conversation": src["id"], "topic": orig["topic"], "session": n_sessions,
                                  "topic_kind": "paraphrase", "kind": "paraphrase",
                                  "paraphrase_of": orig["turns"][prompt_owner[of_row][1]]["event_id"]})
                    elif r < spec.repeat_rate + spec.paraphrase_rate + spec.low_value_rate and len(stream) < spec.length:
                        while low_cursor < len(low_pool) and low_pool[low_cursor][0] in taken:
                            low_cursor += 1
                        if low_cursor < len(low_pool):
                            lc, lt = low_pool[low_cursor]
                            low_cursor += 1
                            t = conversations[lc]["turns"][lt]
                            emit({**t, "event_id": f"{t['event_id']}#l{u}", "conversation": conversations[lc]["id"],
                                  "topic": "low-value", "session": n_sessions, "topic_kind": "low_value",
                                  "kind": "low_value"})
        pick = sorted(rng.choice(len(pool), size=min(spec.test_per_user, len(pool)), replace=False))
        test = [pool[i] for i in pick]
        iid = [dict(e) for e in stream]
        perm = rng.permutation(len(iid))
        iid = [iid[i] for i in perm]
        for seq, e in enumerate(iid):
            e["seq"] = seq
        users.append({"user": name, "split": "validation" if u >= spec.users else "test", "stream": stream,
                      "iid": iid, "test": test, "phase_favourites": phase_favs})
        log.info("%s: %d events, %d sessions, %d held-out conversations, %d test prompts", name, len(stream),
                 n_sessions, len(pool), len(test))
    return users


def _paraphrase(rng: np.random.Generator, asked_rows: list[int], vectors: np.ndarray,
                owner: list[tuple[int, int]], taken: set[int], min_cos: float) -> tuple[tuple[int, int], int] | None:
    """A turn of an untaken conversation whose prompt is within ``min_cos`` of an earlier prompt of the user."""
    for _ in range(4):  # a few earlier prompts are tried; most have no close neighbour
        row = asked_rows[int(rng.integers(len(asked_rows)))]
        sims = vectors @ vectors[row]
        for j in np.argsort(-sims)[:32]:
            if sims[j] < min_cos:
                break
            if owner[j][0] not in taken and j != row:
                return owner[j], row
    return None


# --- statistics ----------------------------------------------------------------------------


def stream_stats(user: dict[str, Any], which: str = "stream") -> dict[str, Any]:
    """What a stream looks like, measured: shares, burstiness, tail, repeats."""
    events = user[which]
    n = len(events)
    kinds = Counter(e["kind"] for e in events)
    topic_events = [e["topic"] for e in events if e["kind"] == "turn"]
    counts = Counter(topic_events)
    runs, last = [], None
    for t in topic_events:
        if t == last:
            runs[-1] += 1
        else:
            runs.append(1)
            last = t
    top3 = sum(c for _, c in counts.most_common(3))
    rare = [t for t, c in counts.items() if c < 0.02 * len(topic_events)]
    low_all = sum(1 for e in events if is_low_value(e["prompt"]))
    prompts = Counter(normalise(e["prompt"]) for e in events)
    return {
        "user": user["user"], "order": which, "events": n, "topics": len(counts),
        "top3_topic_share": round(top3 / max(len(topic_events), 1), 3),
        "rare_topics": len(rare), "rare_topic_event_share": round(sum(counts[t] for t in rare) / max(len(topic_events), 1), 3),
        "mean_topic_run": round(float(np.mean(runs)) if runs else math.nan, 2),
        "repeat_share": round(kinds["repeat"] / n, 3), "paraphrase_share": round(kinds["paraphrase"] / n, 3),
        "inserted_low_value_share": round(kinds["low_value"] / n, 3),
        "low_value_share": round(low_all / n, 3),
        "exact_duplicate_prompt_share": round(sum(c - 1 for c in prompts.values()) / n, 3),
        "conversations": len({e["conversation"] for e in events}),
        "test_prompts": len(user["test"]), "test_topics": len({t["topic"] for t in user["test"]}),
        "test_position_quartiles": [int(q) for q in np.percentile([t["position"] for t in user["test"]], [25, 50, 75])]
        if user["test"] else [],
    }


_KEEP = ("event_id", "conversation", "topic", "session", "topic_kind", "kind", "turn", "repeat_of", "paraphrase_of")


def compact(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The users without their text: what is committed (text is looked up by event id)."""
    def strip(e: dict[str, Any]) -> dict[str, Any]:
        return {k: e[k] for k in _KEEP if k in e} | ({"position": e["position"]} if "position" in e else {})
    return [{"user": u["user"], "split": u["split"], "phase_favourites": u["phase_favourites"],
             "stream": [strip(e) for e in u["stream"]], "iid_order": [e["event_id"] for e in u["iid"]],
             "test": [strip(t) for t in u["test"]]} for u in users]


def with_text(users: list[dict[str, Any]], conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inverse of :func:`compact`: text back from the dataset by event id (``id#r…`` repeats a turn)."""
    text = {t["event_id"]: (t["prompt"], t["response"]) for c in conversations for t in c["turns"]}
    out = []
    for u in users:
        def fill(e: dict[str, Any]) -> dict[str, Any]:
            prompt, response = text[e["event_id"].split("#")[0]]
            return {**e, "prompt": prompt, "response": response}
        stream = [fill(e) for e in u["stream"]]
        by_id = {e["event_id"]: e for e in stream}
        iid = [{**by_id[i], "seq": seq} for seq, i in enumerate(u["iid_order"])]
        out.append({**u, "stream": [{**e, "seq": seq} for seq, e in enumerate(stream)], "iid": iid,
                    "test": [fill(t) for t in u["test"]]})
    return out


def build(dataset: str, spec: StreamSpec, out: Path) -> list[dict[str, Any]]:
    """Build (or load) the dataset's users; ``out/<dataset>.json`` holds them without text, plus
    their statistics. A file made with another spec is refused rather than mixed."""
    from operators.files import atomic_write

    path = out / f"{dataset}.json"
    conversations = load_conversations(dataset)
    if spec.max_conversations:
        conversations = conversations[: spec.max_conversations]
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["spec_digest"] != spec.digest():
            raise ValueError(f"{path} was built with spec {saved['spec_digest']}, not {spec.digest()}; "
                             "use another --out or delete it (its cells would be mixed otherwise)")
        return with_text(saved["users"], conversations)
    # Paraphrase search space and ShareGPT's topic source: MiniLM vectors of each conversation's
    # first few turns' prompts (content prompts only: a low-value turn has no paraphrase to find).
    owner = [(ci, ti) for ci, conv in enumerate(conversations) for ti, t in enumerate(conv["turns"][:3])
             if not is_low_value(t["prompt"])]
    log.info("%s: %d conversations, embedding %d prompts with MiniLM", dataset, len(conversations), len(owner))
    vectors = minilm_vectors([conversations[ci]["turns"][ti]["prompt"] for ci, ti in owner])
    if dataset == "sharegpt":
        # A conversation's topic: the cluster of its first content prompt (its opening one unless that
        # was a greeting); conversations with none keep the topic "none".
        first: dict[int, int] = {}
        for j, (ci, _) in enumerate(owner):
            first.setdefault(ci, j)
        rows = sorted(first.values())
        labels = cluster_topics(vectors[rows], spec.sharegpt_topics, spec.seed)
        for j, label in zip(rows, labels):
            conversations[owner[j][0]]["topic"] = f"cluster-{int(label):02d}"
    users = build_users(dataset, spec, conversations, vectors, owner)
    stats = [stream_stats(u, order) for u in users for order in ("stream", "iid")]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"dataset": dataset, "spec": dataclasses.asdict(spec), "spec_digest": spec.digest(),
                                   "stats": stats, "users": compact(users)}, ensure_ascii=False).encode())
    return with_text(compact(users), conversations)
