"""Map common dataset record shapes onto edgetune events, and split them over users.

Each mapper turns one source record into event dicts (``event_id``, ``prompt``,
optional ``response``, ``meta``); ``user_id`` and ``ts`` are added later by
:func:`assign_users` and :func:`with_timestamps`, because both depend on the
record's place in the replay, not on the record itself.

Mappers never validate and never drop: a record they cannot map (an Alpaca
record without an instruction, a ShareGPT record without turns) comes back
as-is, so the validator in ``operators/events.py`` dead-letters it with a reason.

>>> rec = {"instruction": "Name a prime.", "input": "", "output": "7"}
>>> detect_format(rec)
'alpaca'
>>> events = with_timestamps(assign_users(to_events(rec, 0), n_users=2, how="round_robin", seed=0))
>>> list(events)  # doctest: +NORMALIZE_WHITESPACE
[{'event_id': 'alpaca-0-0', 'prompt': 'Name a prime.', 'response': '7',
  'meta': {'source': 'alpaca', 'record': 0}, 'user_id': 'user-0', 'ts': 1704067200000}]
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

FORMATS = ("event", "alpaca", "dolly", "sharegpt", "chitchat", "unknown")
"""What :func:`detect_format` can answer; ``unknown`` records pass through unmapped."""

SPLITS = ("round_robin", "topic", "hash", "field")
"""How :func:`assign_users` can hand events to users."""

Split = Literal["round_robin", "topic", "hash", "field"]
RecordFormat = Literal["auto", "event", "alpaca", "dolly", "sharegpt", "chitchat"]

DEFAULT_START_MS = 1_704_067_200_000
"""2024-01-01T00:00:00Z: where synthetic replay clocks start."""

# ShareGPT speaker names seen in the wild; "system" turns are neither and are skipped.
_HUMAN_ROLES = frozenset({"human", "user"})
_ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "assistant", "bing", "bard", "model"})
_EVENT_KEYS = frozenset({"event_id", "user_id", "prompt"})


def detect_format(rec: Any) -> str:
    """Name the shape of one record; see :data:`FORMATS`.

    An event with a missing field is still an ``event`` so the validator can say
    which field is missing.

    >>> detect_format({"event_id": "e1", "user_id": "u1", "ts": 0, "prompt": "hi"})
    'event'
    >>> detect_format({"instruction": "Sum 2+2", "context": "", "response": "4", "category": "open_qa"})
    'dolly'
    >>> detect_format({"conversations": [{"from": "human", "value": "hi"}]})
    'sharegpt'
    >>> detect_format({"input": "x", "output": "y"}), detect_format([1, 2])
    ('alpaca', 'unknown')
    """
    if not isinstance(rec, Mapping):
        return "unknown"
    if "conversations" in rec:
        return "sharegpt"
    if "messages" in rec:
        return "chitchat"
    if _EVENT_KEYS & rec.keys():
        return "event"
    if "category" in rec or "context" in rec or ("instruction" in rec and "response" in rec):
        return "dolly"
    if "instruction" in rec or "output" in rec:
        return "alpaca"
    return "unknown"


def from_alpaca(rec: Mapping[str, Any], index: int, *, source: str = "alpaca") -> dict[str, Any]:
    """Map an Alpaca record (``instruction``, optional ``input``, ``output``) to one event.

    The input is appended after a blank line, as in the Alpaca prompt template.

    >>> from_alpaca({"instruction": "Translate to French.", "input": "cat", "output": "chat"}, 3)
    {'event_id': 'alpaca-3-0', 'prompt': 'Translate to French.\\n\\ncat', 'response': 'chat', 'meta': {'source': 'alpaca', 'record': 3}}
    >>> from_alpaca({"input": "cat", "output": "chat"}, 4)  # no instruction: returned as-is
    {'input': 'cat', 'output': 'chat'}
    """
    instruction = rec.get("instruction")
    if not isinstance(instruction, str):
        return dict(rec)
    event = {"event_id": _event_id(source, index, 0), "prompt": _join(instruction, rec.get("input"))}
    if rec.get("output") is not None:
        event["response"] = rec["output"]
    event["meta"] = {"source": source, "record": index}
    return event


def from_dolly(rec: Mapping[str, Any], index: int, *, source: str = "dolly") -> dict[str, Any]:
    """Map a Dolly record (``instruction``, ``context``, ``response``, ``category``) to one event.

    >>> from_dolly({"instruction": "Who wrote Emma?", "context": "", "response": "Jane Austen", "category": "open_qa"}, 0)
    {'event_id': 'dolly-0-0', 'prompt': 'Who wrote Emma?', 'response': 'Jane Austen', 'meta': {'source': 'dolly', 'record': 0, 'category': 'open_qa'}}
    """
    instruction = rec.get("instruction")
    if not isinstance(instruction, str):
        return dict(rec)
    event = {"event_id": _event_id(source, index, 0), "prompt": _join(instruction, rec.get("context"))}
    if rec.get("response") is not None:
        event["response"] = rec["response"]
    event["meta"] = {"source": source, "record": index}
    if rec.get("category") is not None:
        event["meta"]["category"] = rec["category"]
    return event


def from_sharegpt(rec: Mapping[str, Any], index: int, *, source: str = "sharegpt") -> list[dict[str, Any]]:
    """Map a ShareGPT conversation to one event per human turn, answered by the next turn.

    A human turn followed by an assistant turn is a labelled event; a human turn
    with no assistant reply (the conversation ends, or the human speaks again)
    is an unlabelled event. Assistant turns with no human turn before them
    (ShareGPT splits long chats) and ``system`` turns carry no prompt and are
    not events. ``turn`` is the human turn's index in ``conversations``.

    >>> rec = {"id": "c1", "conversations": [
    ...     {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
    ...     {"from": "human", "value": "Bye"}]}
    >>> for e in from_sharegpt(rec, 7):
    ...     print(e["event_id"], repr(e["prompt"]), repr(e.get("response")), e["meta"])
    sharegpt-7-0 'Hi' 'Hello!' {'source': 'sharegpt', 'record': 7, 'conversation': 'c1', 'turn': 0}
    sharegpt-7-2 'Bye' None {'source': 'sharegpt', 'record': 7, 'conversation': 'c1', 'turn': 2}
    """
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) and "from" in t and "value" in t for t in turns):
        return [dict(rec)]
    conversation = rec.get("id", f"{source}-{index}")
    events = []
    for k, turn in enumerate(turns):
        if turn["from"] not in _HUMAN_ROLES:
            continue
        reply = turns[k + 1] if k + 1 < len(turns) and turns[k + 1]["from"] in _ASSISTANT_ROLES else None
        events.append(_turn_event(source, index, k, conversation, turn["value"], reply and reply["value"]))
    # A conversation with no human turn maps to nothing; hand it on so it is dead-lettered, not lost.
    return events or [dict(rec)]


def from_chitchat(convo: Mapping[str, Any], index: int, *, source: str = "chitchat") -> list[dict[str, Any]]:
    """Map a Chit Chat conversation to events: message 0 prompts, message 1 replies, and so on.

    Pairs do not overlap (0→1, 2→3, ...), so every prompt comes from the speaker
    who opened the chat, as on a device with one owner; an unanswered last
    message is an unlabelled event. A message is a burst of utterances by one
    sender, joined by newlines. The source timestamp is kept as
    ``meta.source_ts`` rather than used as ``ts``: the package's conversations
    are not in time order, and event-time windows need a clock that only moves
    forward within a user.

    >>> convo = {"id": "c9", "messages": [
    ...     [{"text": "Hello", "timestamp": "2018-05-02T19:38:15Z", "sender": "a"},
    ...      {"text": "How are you?", "timestamp": "2018-05-02T19:38:20Z", "sender": "a"}],
    ...     [{"text": "Good!", "timestamp": "2018-05-02T19:38:29Z", "sender": "b"}],
    ...     [{"text": "Nice", "timestamp": "2018-05-02T19:39:00Z", "sender": "a"}]]}
    >>> for e in from_chitchat(convo, 2):
    ...     print(e["event_id"], repr(e["prompt"]), repr(e.get("response")), e["meta"]["turn"], e["meta"]["source_ts"])
    chitchat-2-0 'Hello\\nHow are you?' 'Good!' 0 2018-05-02T19:38:15Z
    chitchat-2-2 'Nice' None 2 2018-05-02T19:39:00Z
    """
    try:
        texts = ["\n".join(u["text"] for u in message) for message in convo["messages"]]
        stamps = [message[0].get("timestamp") if message else None for message in convo["messages"]]
    except (KeyError, TypeError, AttributeError):
        return [dict(convo)]
    conversation = convo.get("id", f"{source}-{index}")
    events = []
    for k in range(0, len(texts), 2):
        reply = texts[k + 1] if k + 1 < len(texts) else None
        event = _turn_event(source, index, k, conversation, texts[k], reply)
        if stamps[k] is not None:
            event["meta"]["source_ts"] = stamps[k]
        events.append(event)
    return events or [dict(convo)]


def to_events(rec: Any, index: int, fmt: RecordFormat = "auto") -> list[Any]:
    """Map one record of any known shape; events and unknown shapes come back unchanged.

    >>> to_events({"instruction": "Hi", "output": "Hello"}, 1)[0]["event_id"]
    'alpaca-1-0'
    >>> to_events({"event_id": "e1"}, 1), to_events(42, 1)
    ([{'event_id': 'e1'}], [42])
    """
    kind = detect_format(rec) if fmt == "auto" else fmt
    if kind not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is not a record format; use 'auto' or one of {FORMATS[:-1]}")
    if not isinstance(rec, Mapping):
        return [rec]
    if kind == "alpaca":
        return [from_alpaca(rec, index)]
    if kind == "dolly":
        return [from_dolly(rec, index)]
    if kind == "sharegpt":
        return from_sharegpt(rec, index)
    if kind == "chitchat":
        return from_chitchat(rec, index)
    return [rec]


def topic_key(event: Mapping[str, Any]) -> str | None:
    """What keeps events together for a user: the conversation, else the Dolly category, else the event.

    >>> topic_key({"event_id": "e1", "meta": {"conversation": "c1", "category": "qa"}})
    'c1'
    >>> topic_key({"event_id": "e2", "meta": {"category": "qa"}}), topic_key({"event_id": "e3"})
    ('qa', 'e3')
    """
    meta = event.get("meta")
    if isinstance(meta, Mapping):
        for name in ("conversation", "category"):
            if isinstance(meta.get(name), str):
                return meta[name]
    event_id = event.get("event_id")
    return event_id if isinstance(event_id, str) else None


def user_name(k: int) -> str:
    """The user id of the ``k``-th synthetic user.

    >>> user_name(2)
    'user-2'
    """
    return f"user-{k}"


def assign_users(events: Iterable[Any], n_users: int, how: Split = "topic", seed: int = 0) -> Iterator[Any]:
    """Set ``user_id`` on each event dict; other items (raw bytes) pass through untouched.

    - ``round_robin``: event ``i`` goes to the ``i mod n``-th user of a seeded
      user order. Even counts, but a conversation is spread over users.
    - ``topic``: each new :func:`topic_key` goes to the next user of a seeded
      order, so a user gets whole conversations (or whole Dolly categories) and
      users get equal numbers of topics. Remembers every topic seen.
    - ``hash``: a seeded stable hash of :func:`topic_key` picks the user; whole
      conversations, no memory, same answer in any process.
    - ``field``: keep the event's own ``user_id`` (one missing stays missing).

    Events are copied, never changed in place. Same input and seed, same users.

    >>> evs = [{"event_id": f"e{i}", "meta": {"conversation": c}} for i, c in enumerate("aabbc")]
    >>> [e["user_id"] for e in assign_users(evs, 2, "round_robin", seed=0)]
    ['user-0', 'user-1', 'user-0', 'user-1', 'user-0']
    >>> [e["user_id"] for e in assign_users(evs, 2, "topic", seed=0)]
    ['user-0', 'user-0', 'user-1', 'user-1', 'user-0']
    >>> [e["user_id"] for e in assign_users(evs, 2, "topic", seed=1)]
    ['user-1', 'user-1', 'user-0', 'user-0', 'user-1']
    """
    if how not in SPLITS:
        raise ValueError(f"how={how!r} is not a user split; use one of {SPLITS}")
    if how == "field":
        yield from events
        return
    if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1:
        raise ValueError(f"n_users={n_users!r} must be an int >= 1; pass e.g. n_users=3, or how='field' to keep user ids")
    order = list(range(n_users))
    random.Random(seed).shuffle(order)
    topics: dict[str, int] = {}
    for i, event in enumerate(events):
        if not isinstance(event, Mapping):
            yield event
            continue
        # Raw records without an id still need a stable key: their position is one.
        key = topic_key(event) or f"#{i}"
        if how == "round_robin":
            k = order[i % n_users]
        elif how == "topic":
            k = topics.setdefault(key, order[len(topics) % n_users])
        else:
            k = _stable_hash(f"{seed}:{key}") % n_users
        yield {**event, "user_id": user_name(k)}


def synthetic_ts(i: int, start_ms: int = DEFAULT_START_MS, step_ms: int = 1000) -> int:
    """The replay clock: event ``i`` happens ``i`` steps after ``start_ms`` (epoch ms).

    >>> synthetic_ts(0), synthetic_ts(3, start_ms=0)
    (1704067200000, 3000)
    """
    return start_ms + i * step_ms


def with_timestamps(
    events: Iterable[Any], start_ms: int = DEFAULT_START_MS, step_ms: int = 1000
) -> Iterator[Any]:
    """Give each event dict lacking ``ts`` the :func:`synthetic_ts` of its position.

    Dicts that have a ``ts`` keep it; other items pass through untouched.

    >>> [e["ts"] for e in with_timestamps([{"prompt": "a"}, {"prompt": "b", "ts": 5}, {"prompt": "c"}], start_ms=0)]
    [0, 5, 2000]
    """
    for i, event in enumerate(events):
        if isinstance(event, Mapping) and "ts" not in event:
            yield {**event, "ts": synthetic_ts(i, start_ms, step_ms)}
        else:
            yield event


def _turn_event(
    source: str, index: int, turn: int, conversation: Any, prompt: Any, response: Any
) -> dict[str, Any]:
    event = {"event_id": _event_id(source, index, turn), "prompt": prompt}
    if response is not None:
        event["response"] = response
    event["meta"] = {"source": source, "record": index, "conversation": conversation, "turn": turn}
    return event


def _event_id(source: str, index: int, turn: int) -> str:
    return f"{source}-{index}-{turn}"


def _join(instruction: str, extra: Any) -> str:
    return f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra else instruction


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; a replay must split users the same way every run.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
