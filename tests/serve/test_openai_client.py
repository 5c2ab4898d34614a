"""`edgetune serve` through the official `openai` client: the real SmolLM2 model, real peft adapters.

Each user's expected answer is computed beforehand with ``models.generate.generate`` on a
separate copy of the model wrapped with that user's adapter (``load_adapter``), so a
served answer that came from the wrong adapter, or from the base model, fails the test.
"""

from __future__ import annotations

import copy
import threading

import httpx
import pytest

from flows.serve import Server
from flows.spool import EVENTS_FILE
from flows.turns import SpoolTurns
from models.adapters import AdapterStore, load_adapter
from models.configure import generate_config
from models.generate import generate
from models.serving import AdapterPool
from operators.config import Settings
from operators.events import Event, parse_event
from tests.serve.helpers import make_adapter, running, save_promoted, spool_lines

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.real_model

PROMPT = "Name a colour of the sky."
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from models.lm import LMConfig, load_lm

    tmp = tmp_path_factory.mktemp("serve")
    model, tokenizer = load_lm(LMConfig())
    pristine = copy.deepcopy(model)  # the pool wraps `model` in place; new adapters are made from this copy
    settings = Settings(output={"dir": str(tmp)}, serve={"port": 0, "max_queue": 1, "max_resident": 2},
                        generate={"max_new_tokens": MAX_TOKENS}, metrics={"port": 0})
    gen = generate_config(settings)
    store = AdapterStore(settings.adapters_dir)
    expected = {None: generate(model, tokenizer, [PROMPT], gen)[0]}
    for seed, user in enumerate(("alice", "bob", "dan"), start=1):
        save_promoted(store, user, make_adapter(model, seed))
        wrapped = load_adapter(copy.deepcopy(model), store.path(user, 1))
        expected[user] = generate(wrapped, tokenizer, [PROMPT], gen)[0]
    # The test can fail only if the adapters make different answers: check that first.
    assert len(set(expected.values())) == 4, expected
    server = Server(settings, AdapterPool(model, tokenizer, store, max_resident=2), SpoolTurns(settings.spool_dir))
    with running(server, settings) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused-on-loopback", max_retries=0, timeout=300)
        yield {"client": client, "expected": expected, "store": store, "settings": settings, "server": server,
               "base_url": base_url, "pristine": pristine}


def ask(client, user, stream=False, prompt=PROMPT):
    return client.chat.completions.create(model="smollm2-135m-instruct", user=user, stream=stream,
                                          messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS)


def test_models_lists_the_served_model_and_the_users_adapter(world):
    listing = world["client"].models.list(extra_query={"user": "alice"})
    (entry,) = listing.data
    assert entry.id == "smollm2-135m-instruct" and entry.model_extra["adapter_version"] == 1
    assert world["client"].models.list(extra_query={"user": "carol"}).data[0].model_extra["adapter_version"] is None


def test_interleaved_users_get_answers_from_their_own_adapters(world):
    client, expected = world["client"], world["expected"]
    for user in ("alice", "bob", "carol", "alice", "bob"):  # carol has no adapter: the base model
        reply = ask(client, user)
        want_version = None if user == "carol" else 1
        assert reply.choices[0].message.content == expected[None if user == "carol" else user], user
        assert reply.model_extra["adapter_version"] == want_version
        assert reply.system_fingerprint == ("edgetune-base" if want_version is None else "edgetune-v1")
        assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens > 5


def test_streaming_gives_the_same_answer_in_pieces_and_names_the_adapter(world):
    chunks = list(ask(world["client"], "bob", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == world["expected"]["bob"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # really streamed
    assert {c.model_extra["adapter_version"] for c in chunks} == {1}
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert len({c.id for c in chunks}) == 1
    turn_id = chunks[-1].id
    (event,) = [e for e in spool_lines(world["settings"].spool_dir, EVENTS_FILE) if e["event_id"] == turn_id]
    assert event["meta"]["answer"] == text and event["meta"]["adapter_version"] == 1


def test_every_served_turn_is_a_valid_unlabeled_conversation_event(world):
    reply = ask(world["client"], "alice")
    events = {e["event_id"]: e for e in spool_lines(world["settings"].spool_dir, EVENTS_FILE)}
    raw = events[reply.id]
    event = parse_event(raw)
    assert isinstance(event, Event) and event.user_id == "alice" and event.prompt == PROMPT
    assert event.response is None  # the model's own answer is no reference: the turn is unlabeled
    assert raw["meta"] == {"source": "serve", "answer": world["expected"]["alice"], "adapter_version": 1,
                           "model": "smollm2-135m-instruct"}


def test_rollback_and_promotion_take_effect_without_a_restart(world):
    client, store, expected = world["client"], world["store"], world["expected"]
    store.rollback("dan")
    reply = ask(client, "dan")
    assert reply.model_extra["adapter_version"] is None and reply.choices[0].message.content == expected[None]
    store.promote("dan", 1)
    reply = ask(client, "dan")
    assert reply.model_extra["adapter_version"] == 1 and reply.choices[0].message.content == expected["dan"]
    v2 = save_promoted(store, "dan", make_adapter(world["pristine"], seed=9))
    assert ask(client, "dan").model_extra["adapter_version"] == v2
    assert len(world["server"].pool.resident()) <= 2  # the LRU bound holds with four adapters asked for


def test_overload_is_refused_with_429_and_the_server_keeps_answering(world):
    client = world["client"]
    results: list[object] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            outcome = ask(client, "alice", prompt=f"{PROMPT} ({i})")
        except openai.RateLimitError as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    answered = [r for r in results if not isinstance(r, Exception)]
    assert len(results) == 6 and len(refused) + len(answered) == 6
    assert refused and len(answered) >= 2  # max_queue=1: one runs, one waits, the rest are refused
    assert refused[0].response.headers["retry-after"] == "1"
    assert ask(client, "alice").choices[0].message.content == world["expected"]["alice"]


def test_a_request_with_a_wrong_model_or_no_user_message_is_a_clear_400_or_404(world):
    client = world["client"]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", user="alice", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        client.chat.completions.create(model="smollm2-135m-instruct", user="alice",
                                       messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="user"):
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}])


def test_a_body_over_the_limit_is_refused_with_413(world):
    big = "x" * (world["settings"].serve.max_request_bytes + 1)
    r = httpx.post(world["base_url"] + "/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
