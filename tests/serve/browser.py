"""Drive the chat page of a real `edgetune serve --with-stream` in Debian's headless chromium (selenium + chromedriver).

Used by ``test_page.py``, and run as a script to take the README's screenshot with the real model::

    python -m tests.serve.browser --model smollm2-135m-instruct --screenshot docs/serve-page.png

Only the system's ``chromium`` and ``chromedriver`` are used (their paths given to selenium, so
Selenium Manager never downloads a browser or a driver).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if CHROMIUM is None:
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if CHROMEDRIVER is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeFailed(AssertionError):
    pass


def wait_for(check: Callable[[], Any], what: str, timeout: float, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise ServeFailed(f"edgetune serve exited ({proc.returncode}) waiting for {what}:\n"
                              f"{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.1)
    raise ServeFailed(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")


@contextmanager
def serve(out: Path, log: Path, model: str = "tiny-random", extra: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """`edgetune serve --with-stream` on a free loopback port; yields (page URL, process); SIGTERM at the end."""
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--with-stream", "--model", model, "--out", str(out),
           "--port", "0", "--metrics-port", str(free_port()), "--policy", "fifo", "--window", "50",
           "--output.flush-seconds", "0.3", "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        api = wait_for(lambda: (m := re.search(r"edgetune serve: (http://127\.0\.0\.1:\d+)/v1", log.read_text()))
                       and m.group(1), "the server to listen", 300, proc, log)
        yield api + "/", proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def browser(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """Headless chromium under chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync", "--lang=en-US",
                f"--window-size={width},{height}", f"--user-data-dir={_profile()}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _profile() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="edgetune-chromium-")


# --- what a person does on the page ------------------------------------------------------------------------


def open_page(driver: Any, url: str, user: str) -> None:
    driver.get(f"{url}#user={user}")
    wait_for(lambda: " · now answered by " in driver.find_element("id", "status").text, "the page to know its user", 30)


def chat(driver: Any, prompt: str, timeout: float = 120) -> Any:
    """Type ``prompt``, send it, wait for the whole streamed answer; returns the answer's element."""
    before = len(driver.find_elements("css selector", ".turn.assistant"))
    box = driver.find_element("id", "prompt")
    box.send_keys(prompt)
    driver.find_element("id", "send").click()
    turns = wait_for(lambda: (t := driver.find_elements("css selector", ".turn.assistant")) and len(t) > before and t,
                     "the answer to appear", 10)
    turn = turns[-1]
    wait_for(lambda: turn.get_attribute("data-state") in ("done", "error"), "the streamed answer to finish", timeout)
    if turn.get_attribute("data-state") == "error":
        raise AssertionError(f"the page shows an error for the answer: {turn.text}")
    return turn


def request_item(driver: Any, event_id: str, timeout: float = 60) -> Any:
    """The open annotation request ``event_id`` once the page lists it (it polls every 3 s)."""
    selector = f'.req[data-id="{event_id}"]'
    return wait_for(lambda: (found := driver.find_elements("css selector", selector)) and found[0],
                    f"annotation request {event_id} on the page", timeout)


def answer_request(driver: Any, event_id: str, text: str) -> Any:
    item = request_item(driver, event_id)
    item.find_element("css selector", "textarea").send_keys(text)
    item.find_element("css selector", "button.answer").click()
    wait_for(lambda: item.get_attribute("data-state") == "answered"
             or "err" in item.find_element("css selector", ".note").get_attribute("class"),
             "the answer to be accepted", 30)
    if item.get_attribute("data-state") != "answered":
        raise AssertionError(f"the page refused the answer: {item.text}")
    return item


def better_answer(turn: Any, text: str) -> str:
    """Send a preferred answer for ``turn`` through its feedback box; returns the page's note."""
    turn.find_element("css selector", "button.better-open").click()
    turn.find_element("css selector", ".better textarea").send_keys(text)
    turn.find_element("css selector", ".better button.primary").click()
    note = turn.find_element("css selector", ".meta .note")
    wait_for(lambda: note.text and note.text != "sending…", "the feedback to be answered", 30)
    return note.text


def thumbs(turn: Any, up: bool) -> str:
    turn.find_element("css selector", "button.good" if up else "button.bad").click()
    note = turn.find_element("css selector", ".meta .note")
    wait_for(lambda: note.text and note.text != "sending…", "the feedback to be answered", 30)
    return note.text


def main(argv: list[str] | None = None) -> int:
    """Take the README's screenshot: a conversation, feedback, and an open request being answered."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument("--user", default="ann")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        parser.error(reason)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="edgetune-page-"))
    with serve(work / "out", work / "serve.log", args.model, ("--max-new-tokens", "48")) as (url, _), \
            browser(1280, 900) as driver:
        open_page(driver, url, args.user)
        first = chat(driver, "How often should I water a cactus in winter?")
        second = chat(driver, "Give me one tip for a better sourdough crust.")
        print(thumbs(second, up=True))
        third = chat(driver, "What is a good first houseplant for a dark flat?")
        item = request_item(driver, third.get_attribute("data-turn-id"))
        request_item(driver, first.get_attribute("data-turn-id"))
        item.find_element("css selector", "textarea").send_keys("A snake plant or a ZZ plant: both cope with little light.")
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.screenshot))
    print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
