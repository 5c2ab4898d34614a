"""The chat page in a real headless browser (Debian's chromium) against a real `edgetune serve --with-stream`.

A person's steps on the page: chat (the answer streams in and names the adapter that
answered), send a better answer for one turn, and answer an open annotation request in
place. Then the stream's own files say what happened: the served turns are in the
stream's input (the spool), the answers are annotations, and the stream's join attached
both to the buffered samples. The tiny random model answers (quality does not matter).
"""

from __future__ import annotations

import json

import httpx
import pytest

from flows.serve import Server, user_token
from flows.spool import ANNOTATIONS_FILE, EVENTS_FILE
from operators.files import user_file_name
from tests.serve import browser as page
from tests.serve.helpers import spool_lines

pytestmark = pytest.mark.skipif(page.missing() is not None, reason=page.missing() or "")

CACTUS = "How often should I water a cactus in winter?"
BREAD = "Which flour makes the best sourdough?"


def _snapshot(out, user):
    try:
        return {s["event_id"]: s for s in json.loads((out / "buffers" / f"{user_file_name(user)}.json").read_text())["samples"]}
    except (FileNotFoundError, ValueError):
        return {}


def test_the_page_chats_takes_feedback_and_answers_requests_in_place(tmp_path):
    out, log = tmp_path / "out", tmp_path / "serve.log"
    with page.serve(out, log, "tiny-random", ("--max-new-tokens", "6")) as (url, proc), page.browser() as driver:
        served = httpx.get(url)
        assert served.status_code == 200 and "default-src 'none'" in served.headers["content-security-policy"]

        page.open_page(driver, url, "ann")
        assert "ann" in driver.find_element("id", "status").text and "base model" in driver.find_element("id", "status").text
        first = page.chat(driver, CACTUS)
        second = page.chat(driver, BREAD)
        first_id, second_id = first.get_attribute("data-turn-id"), second.get_attribute("data-turn-id")
        assert first_id.startswith("chatcmpl-") and second_id.startswith("chatcmpl-") and first_id != second_id
        assert first.get_attribute("data-adapter") == "base" and "base model" in first.text  # who answered

        # The served turns are the stream's input, with the answer the page showed.
        events = {e["event_id"]: e for e in spool_lines(out / "spool", EVENTS_FILE)}
        assert events[first_id]["prompt"] == CACTUS and events[first_id]["user_id"] == "ann"
        shown = first.find_element("css selector", ".text").text
        assert events[first_id]["meta"]["answer"].strip() == shown.strip()

        # A better answer through the turn's feedback box, then the other turn's request answered in place.
        note = page.better_answer(second, "Strong bread flour, fed starter.")
        assert note.startswith("kept as training data"), note
        item = page.answer_request(driver, first_id, "Once a month at most, in the morning.")
        assert "answered" in item.text
        refused = page.thumbs(first, up=False)  # a thumbs-down alone is no annotation; the page says so
        assert refused.startswith("noted:"), refused

        annotations = {a["event_id"]: a for a in spool_lines(out / "spool", ANNOTATIONS_FILE)}
        assert annotations[first_id]["response"] == "Once a month at most, in the morning."
        assert annotations[second_id]["response"] == "Strong bread flour, fed starter."
        assert len(annotations) == 2

        # The stream's join attached both answers to the buffered samples.
        joined = page.wait_for(lambda: (s := _snapshot(out, "ann")) and all(s.get(i, {}).get("response")
                                                                             for i in (first_id, second_id)) and s,
                               "both answers joined to the buffered turns", 60, proc, log)
        assert joined[first_id]["response"] == "Once a month at most, in the morning."
        assert joined[second_id]["response"] == "Strong bread flour, fed starter."
        # Answered requests leave the page's list at its next poll; the answered item stays, marked.
        page.wait_for(lambda: not driver.find_elements("css selector", f'.req[data-id="{second_id}"]'),
                      "the answered turn to leave the open requests", 30)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors  # no script error, no CSP violation
    assert CACTUS not in log.read_text() and "sourdough" not in log.read_text()  # no user text in the server log


def test_with_a_token_the_page_asks_for_it_keeps_it_out_of_the_url_and_acts_only_as_its_user(tmp_path):
    from models.adapters import AdapterStore
    from models.lm import tiny_llama
    from models.serving import AdapterPool
    from flows.turns import SpoolTurns
    from operators.config import Settings
    from tests.serve.helpers import running

    token = "page-test-token-0123456789abcdef"
    settings = Settings(model={"lm": "tiny-random"}, output={"dir": str(tmp_path)}, metrics={"port": 0},
                        generate={"max_new_tokens": 3}, serve={"port": 0, "token": token})
    model, tokenizer = tiny_llama(seed=0)
    server = Server(settings, AdapterPool(model, tokenizer, AdapterStore(settings.adapters_dir)),
                    SpoolTurns(settings.spool_dir))
    with running(server, settings) as base, page.browser() as driver:
        url = base.removesuffix("v1")
        driver.get(f"{url}#user=ann&token={token}")  # a token in the URL is not used, and is removed
        status = driver.find_element("id", "status")
        page.wait_for(lambda: "401" in status.text, "the page to report the missing token", 10)
        assert token not in driver.current_url
        driver.find_element("id", "token").send_keys(user_token(token, "ann"))
        driver.find_element("id", "apply").click()
        page.wait_for(lambda: "now answered by" in status.text, "the page to accept the user token", 10)
        assert driver.execute_script("return sessionStorage.getItem('edgetune.token')") == user_token(token, "ann")
        assert "token" not in driver.current_url
        turn = page.chat(driver, "hello there")
        assert turn.get_attribute("data-turn-id").startswith("chatcmpl-")
        user_box = driver.find_element("id", "user")  # ann's token may not act as bob
        user_box.clear()
        user_box.send_keys("bob")
        driver.find_element("id", "apply").click()
        page.wait_for(lambda: "403" in status.text, "the page to report that the token is not bob's", 10)
