"""Let a replayed dataset play the user who answers: withhold responses, answer later.

In oracle mode each replayed event goes out without its response, and the
dataset's reference answer follows ``delay`` records later as an annotation.
The per-user state keeps an answer only if it asked for it (the sample is in
the buffer); answers to samples it never kept or already evicted are counted
and dropped, as a real user's late answers would be.

>>> recs = [{"event_id": f"e{i}", "user_id": "u", "ts": i, "prompt": "q", "response": f"a{i}"} for i in range(3)]
>>> for channel, payload in with_oracle_answers(recs, delay=1):
...     print(channel, payload["event_id"], payload.get("response"))
event e0 None
event e1 None
annotation e0 a0
event e2 None
annotation e1 a1
annotation e2 a2
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any


def tag_events(records: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Records as they are: every one on the event channel."""
    for rec in records:
        yield ("event", rec)


def with_oracle_answers(records: Iterable[Any], delay: int = 16) -> Iterator[tuple[str, Any]]:
    """Events without responses, each reference answer ``delay`` records later.

    Records that are not JSON objects with a string ``response`` pass through
    untouched, so malformed input still reaches validation and the dead letters.
    """
    if delay < 0:
        raise ValueError(f"delay={delay}: must be >= 0 records")
    waiting: deque[dict[str, Any]] = deque()
    now: Any = None  # event time of the latest record, when it is epoch ms
    for rec in records:
        obj = _as_object(rec)
        if obj is not None and isinstance(obj.get("ts"), int):
            now = obj["ts"]
        if obj is not None and isinstance(obj.get("response"), str):
            event = {k: v for k, v in obj.items() if k != "response"}
            yield ("event", event)
            waiting.append({"event_id": obj.get("event_id"), "user_id": obj.get("user_id"), "ts": obj.get("ts"),
                            "response": obj["response"]})
        else:
            yield ("event", rec)
        while len(waiting) > delay:
            yield ("annotation", _answered_at(waiting.popleft(), now))
    while waiting:
        yield ("annotation", _answered_at(waiting.popleft(), now))


def _answered_at(answer: dict[str, Any], now: Any) -> dict[str, Any]:
    """The user answers when the record that follows them arrives, in event time."""
    if isinstance(answer["ts"], int) and isinstance(now, int):
        answer["ts"] = max(answer["ts"], now)
    return answer


def _as_object(rec: Any) -> dict[str, Any] | None:
    if isinstance(rec, dict):
        return rec
    if isinstance(rec, (bytes, bytearray, str)):
        try:
            obj = json.loads(rec)
        except (ValueError, UnicodeDecodeError):
            return None
        return obj if isinstance(obj, dict) else None
    return None
