"""The HTTP contract of flows/serve.py on the tiny random model: auth, limits, feedback, annotation requests, logs.

The model's quality does not matter here; the real model and real adapters answer in
test_openai_client.py.
"""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from flows.serve import Server, user_token
from flows.spool import ANNOTATIONS_FILE, EVENTS_FILE
from flows.turns import SpoolTurns
from models.adapters import AdapterStore
from models.lm import tiny_llama
from models.serving import AdapterPool
from operators.config import Settings
from operators.files import atomic_write, user_file_name
from tests.serve.helpers import running, spool_lines

TOKEN = "s3cret-token-for-tests-0123456789"
SECRET_PROMPT = "my private question about zebras"


def make(tmp_path, max_new_tokens=4, **serve):
    settings = Settings(model={"lm": "tiny-random"}, output={"dir": str(tmp_path)}, metrics={"port": 0},
                        generate={"max_new_tokens": max_new_tokens}, serve={"port": 0, **serve})
    model, tokenizer = tiny_llama(seed=0)
    pool = AdapterPool(model, tokenizer, AdapterStore(settings.adapters_dir))
    return Server(settings, pool, SpoolTurns(settings.spool_dir)), settings


def chat(base, user, content=SECRET_PROMPT, token=None, **extra):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{base}/chat/completions", headers=headers, timeout=120,
                      json={"model": "tiny-random", "user": user, "messages": [{"role": "user", "content": content}],
                            **extra})


@pytest.fixture
def open_server(tmp_path):
    server, settings = make(tmp_path)
    with running(server, settings) as base:
        yield base, settings


@pytest.fixture
def token_server(tmp_path):
    server, settings = make(tmp_path, token=TOKEN)
    with running(server, settings) as base:
        yield base, settings


def test_a_non_loopback_bind_without_a_token_is_refused():
    with pytest.raises(ValueError, match="serve.token"):
        Settings(serve={"host": "0.0.0.0"})
    with pytest.raises(ValueError, match="shorter than 16"):
        Settings(serve={"host": "0.0.0.0", "token": "short"})
    assert Settings().serve.host == "127.0.0.1"
    assert Settings(serve={"host": "0.0.0.0", "token": TOKEN}).serve.token.get_secret_value() == TOKEN


def test_with_a_token_requests_need_it_and_a_user_token_acts_only_as_its_user(token_server):
    base, _ = token_server
    assert httpx.get(base.removesuffix("/v1") + "/healthz").status_code == 200  # liveness needs no token
    assert chat(base, "ann").status_code == 401
    assert chat(base, "ann", token="wrong-token-wrong-token").status_code == 401
    assert chat(base, "ann", token=TOKEN).status_code == 200  # the server token acts for anyone
    ann = user_token(TOKEN, "ann")
    assert chat(base, "ann", token=ann).status_code == 200
    refused = chat(base, "bob", token=ann)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
    own = httpx.get(f"{base}/annotation-requests", params={"user": "ann"}, headers={"Authorization": f"Bearer {ann}"})
    other = httpx.get(f"{base}/annotation-requests", params={"user": "bob"}, headers={"Authorization": f"Bearer {ann}"})
    assert own.status_code == 200 and other.status_code == 403


def test_print_user_token_matches_the_server(monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("EDGETUNE_SERVE__TOKEN", TOKEN)
    assert main(["serve", "--print-user-token", "ann"]) == 0
    assert capsys.readouterr().out.strip() == user_token(TOKEN, "ann")


def test_feedback_rules(open_server):
    base, settings = open_server
    reply = chat(base, "ann").json()
    turn, given = reply["id"], reply["choices"][0]["message"]["content"]

    def feedback(**body):
        return httpx.post(f"{base}/feedback", json={"user": "ann", "id": turn, **body})

    down = feedback(rating="down")
    assert down.status_code == 200 and down.json()["annotation"] is False
    assert spool_lines(settings.spool_dir, ANNOTATIONS_FILE) == []  # a thumbs-down alone makes no annotation
    preferred = feedback(rating="down", preferred="A better answer.")
    assert preferred.json()["annotation"] is True
    up = feedback(rating="up")
    assert up.status_code == (200 if given.strip() else 409)
    written = spool_lines(settings.spool_dir, ANNOTATIONS_FILE)
    assert [a["response"] for a in written] == ["A better answer."] + ([given] if given.strip() else [])
    assert all(a["event_id"] == turn and a["user_id"] == "ann" for a in written)
    # Another user cannot vouch for ann's turn, and an unknown turn has no answer to vouch for.
    stranger = httpx.post(f"{base}/feedback", json={"user": "bob", "id": turn, "rating": "up"})
    unknown = feedback(rating="up", id="chatcmpl-unknown")
    assert stranger.status_code == 404 and unknown.status_code == 404
    assert feedback().status_code == 400  # neither a rating nor a preferred answer
    assert feedback(rating="sideways").status_code == 400


def test_open_annotation_requests_come_from_the_users_buffer_snapshot_and_can_be_answered(open_server):
    base, settings = open_server
    buffers = settings.output.dir / "buffers"
    buffers.mkdir(parents=True, exist_ok=True)
    view = {"user_id": "ann", "policy": "sdss", "events_seen": 3, "samples": [
        {"event_id": "e1", "seq": 1, "domain": "general", "eoe": 0.5, "dss": 0.1, "prompt": "open one", "response": None,
         "ts_ms": 1},
        {"event_id": "e2", "seq": 2, "domain": "general", "eoe": 0.5, "dss": 0.1, "prompt": "answered",
         "response": "yes", "ts_ms": 2}]}
    atomic_write(buffers / f"{user_file_name('ann')}.json", json.dumps(view).encode())
    listed = httpx.get(f"{base}/annotation-requests", params={"user": "ann"}).json()
    assert listed == {"user": "ann", "requests": [{"id": "e1", "prompt": "open one", "ts_ms": 1}]}
    assert httpx.get(f"{base}/annotation-requests", params={"user": "bob"}).json()["requests"] == []
    # Only an open request of that very user can be answered.
    assert httpx.post(f"{base}/annotation-requests/e2/answer", json={"user": "ann", "response": "x"}).status_code == 404
    assert httpx.post(f"{base}/annotation-requests/e1/answer", json={"user": "bob", "response": "x"}).status_code == 404
    ok = httpx.post(f"{base}/annotation-requests/e1/answer", json={"user": "ann", "response": "my answer"})
    assert ok.status_code == 200 and ok.json() == {"id": "e1", "annotation": True}
    (annotation,) = spool_lines(settings.spool_dir, ANNOTATIONS_FILE)
    assert (annotation["event_id"], annotation["user_id"], annotation["response"]) == ("e1", "ann", "my answer")
    # Answered here: no longer listed, even before the stream rewrites the snapshot.
    assert httpx.get(f"{base}/annotation-requests", params={"user": "ann"}).json()["requests"] == []


def test_limits_and_bad_requests_get_clear_errors(open_server):
    base, settings = open_server
    big = chat(base, "ann", content="x" * (settings.serve.max_request_bytes + 10))
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    long = chat(base, "ann", content="y" * (settings.max_chars + 1))  # under the byte limit only if max_chars is
    assert long.status_code in (400, 413)
    assert chat(base, "ann", content="   ").status_code == 400
    assert chat(base, "").status_code == 400
    assert httpx.post(f"{base}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 400
    # Chunked upload without a Content-Length is cut off at the limit as it arrives.
    def body():
        for _ in range(settings.serve.max_request_bytes // 1000 + 2):
            yield b"x" * 1000

    assert httpx.post(f"{base}/chat/completions", content=body()).status_code == 413
    assert spool_lines(settings.spool_dir, EVENTS_FILE) == []  # nothing refused was recorded


def test_max_tokens_is_capped_and_finish_reason_says_length(open_server):
    base, settings = open_server
    reply = chat(base, "ann", max_tokens=1000).json()
    assert reply["usage"]["completion_tokens"] <= settings.generate.max_new_tokens
    one = chat(base, "ann", max_tokens=1).json()
    assert one["usage"]["completion_tokens"] == 1 and one["choices"][0]["finish_reason"] == "length"


def test_no_conversation_text_reaches_info_logs(open_server, caplog):
    base, _ = open_server
    with caplog.at_level(logging.INFO):
        reply = chat(base, "ann").json()
        answer = reply["choices"][0]["message"]["content"]
        httpx.post(f"{base}/feedback", json={"user": "ann", "id": reply["id"], "preferred": "secret preferred text"})
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert SECRET_PROMPT not in text and "secret preferred text" not in text
    assert not answer.strip() or answer not in text


def test_a_client_that_leaves_mid_stream_stops_the_generation_and_no_turn_is_recorded(tmp_path):
    import time

    from operators import metrics

    server, settings = make(tmp_path, max_new_tokens=1000)
    cancelled = metrics.SERVE_TURNS.labels(outcome="cancelled")
    before = cancelled._value.get()
    with running(server, settings) as base:
        with httpx.stream("POST", f"{base}/chat/completions", timeout=60, json={
                "model": "tiny-random", "user": "ann", "stream": True,
                "messages": [{"role": "user", "content": SECRET_PROMPT}]}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # the stream started
        deadline = time.monotonic() + 60
        while cancelled._value.get() == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cancelled._value.get() == before + 1
        assert spool_lines(settings.spool_dir, EVENTS_FILE) == []
        # The worker is free again: the next request is answered at once.
        assert chat(base, "ann", max_tokens=2).status_code == 200


def test_streaming_names_the_adapter_and_ends_with_done(open_server):
    base, settings = open_server
    with httpx.stream("POST", f"{base}/chat/completions", timeout=60, json={
            "model": "tiny-random", "user": "ann", "stream": True,
            "messages": [{"role": "user", "content": "hello"}]}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["adapter_version"] is None for c in chunks)
    last = chunks[-1]
    (event,) = spool_lines(settings.spool_dir, EVENTS_FILE)
    assert {c["id"] for c in chunks} == {event["event_id"]} and last["usage"]["completion_tokens"] >= 1
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == event["meta"]["answer"]


def test_a_tampered_latest_adapter_is_refused_with_503_not_replaced_by_another_version(tmp_path):
    from tests.models.test_adapters import _lora
    from tests.serve.helpers import save_promoted

    server, settings = make(tmp_path)
    store = server.pool.store
    save_promoted(store, "ann", _lora(seed=3))
    with running(server, settings) as base:
        ok = chat(base, "ann")
        assert ok.status_code == 200 and ok.json()["adapter_version"] == 1
        assert ok.headers["x-edgetune-adapter-version"] == "1"
        save_promoted(store, "ann", _lora(seed=4))
        weights = store.path("ann", 2) / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # changed after training
        refused = chat(base, "ann")
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "adapter_refused"
        assert "rollback" in refused.json()["error"]["message"]
        store.rollback("ann")  # what the message says to do: v1 answers again
        assert chat(base, "ann").json()["adapter_version"] == 1
        (store.root / "ann" / "latest").write_text("garbage\n")
        broken = chat(base, "ann")
        assert broken.status_code == 503 and broken.json()["error"]["type"] == "adapter_store_error"
        assert chat(base, "bob").status_code == 200  # the server goes on for everyone else
    assert len(spool_lines(settings.spool_dir, EVENTS_FILE)) == 3  # only answered turns were recorded
