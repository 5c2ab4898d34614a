"""Carve held-out evaluation events out of a replay, stably and per user.

An event is held out when it is labeled and the hash of ``(user_id, event_id)``
falls in the first ``fraction`` of the hash range: the same events are held out
in every replay of the same data, and they never enter the stream.

>>> recs = [{"event_id": f"e{i}", "user_id": "u", "ts": i, "prompt": "q", "response": "a"} for i in range(1000)]
>>> held = [r for r in recs if is_heldout(r, 0.1)]
>>> 80 < len(held) < 120, is_heldout({"event_id": "x", "user_id": "u", "prompt": "q"}, 1.0)
(True, False)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def is_heldout(record: Any, fraction: float) -> bool:
    """Whether a replay record is a held-out evaluation event (labeled records only)."""
    if fraction <= 0:
        return False
    obj = record
    if isinstance(record, (bytes, bytearray, str)):
        try:
            obj = json.loads(record)
        except (ValueError, UnicodeDecodeError):
            return False
    if not isinstance(obj, dict) or not isinstance(obj.get("response"), str) or not obj["response"].strip():
        return False
    if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        return False
    key = f"{obj.get('user_id')}\x00{obj.get('event_id')}".encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return bucket < fraction
