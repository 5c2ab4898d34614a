"""infra/prometheus against the real thing.

promtool checks the configs and rules and runs the rules' unit tests
(infra/prometheus/alerts_test.yml). Then a real Prometheus, started from
prometheus.local.yml with a 1 s scrape interval, scrapes the real
``operators.metrics`` exporter (default registry) while a deliberately unhealthy
workload moves every metric; every dashboard query must return finite data,
every alert expression must evaluate, the alerts for the problems in the
workload must be pending and the liveness alerts must stay quiet.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server

from infra.dashboards import OUT as DASHBOARD_JSON
from infra.dashboards import expressions
from operators import metrics

pytestmark = pytest.mark.prometheus

PROM_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
JOB = "edgetune"
# Grafana's interval variables, replaced as Grafana would for a 1 s scrape interval and a 1 h range;
# 1m holds the >= 2 samples rate() needs once three scrapes have happened.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
# Alerts about liveness: the workload below is alive, so these must find nothing.
QUIET_WHILE_ALIVE = {"EdgetuneExporterDown", "EdgetuneNoEventsProcessed"}


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not on PATH: apt-get install -y prometheus")
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=PROM_DIR)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_config(config: str) -> None:
    result = _promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# --- a live Prometheus scraping operators.metrics -------------------------------------------------


def _sick_tick() -> None:
    """One slice of an unhealthy pipeline: every metric moves and every non-liveness alert's condition holds."""
    for outcome, policy, domain in (("admitted", "sdss", "code"), ("replaced", "sdss", "health"),
                                    ("rejected", "fifo", "general"), ("duplicate", "sdss", "general")):
        metrics.record_decision({"outcome": outcome, "policy": policy, "domain": domain, "eoe": 0.3, "dss": 0.6,
                                 "idd": 0.9, "score_seconds": 2e-4, "select_seconds": 3e-4})
    metrics.record_dead_letter("malformed_json")  # 1 in 5 events: above the 5% alert
    metrics.EMBED_SECONDS.observe(8.0)  # p95 above 5 s
    metrics.EMBED_EVENTS.inc(8)
    metrics.USERS.set(3)
    metrics.ANNOTATION_REQUESTS.inc(3)
    metrics.record_annotation({"status": "attached", "latency_ms": 45_000})
    metrics.record_annotation({"status": "unanswered"})
    metrics.record_annotation({"status": "unanswered"})  # 2 of 3 requests unanswered: above 50%
    metrics.SYNTHETIC_PAIRS.labels(outcome="kept").inc()
    metrics.SYNTHETIC_PAIRS.labels(outcome="off_topic").inc()
    metrics.SYNTH_SECONDS.observe(1.5)
    metrics.TRAIN_WINDOWS.labels(trigger="event_time").inc()
    metrics.TRAIN_REQUESTS.labels(outcome="queued").inc()
    metrics.TRAIN_REQUESTS.labels(outcome="not_journaled").inc()  # the pending-runs journal could not be written
    metrics.TRAIN_RUNS.labels(outcome="failed").inc(2)  # 2 of 3 runs failed: above 50%
    metrics.TRAIN_RUNS.labels(outcome="rejected").inc()  # rejections and no promotion
    metrics.TRAIN_LOSS.observe(2.2)
    metrics.TRAIN_STEP_SECONDS.observe(0.7)
    metrics.TRAIN_TOKENS_PER_SECOND.set(900)
    metrics.TRAIN_SAMPLES.observe(40)
    metrics.TRAIN_QUEUE.set(2)
    metrics.ADAPTER_VERSIONS.inc()
    metrics.KAFKA_OFFSET_LOSS.labels(kind="recreated", action="earliest").inc()  # a broker lost its log
    metrics.record_pii({"email": 1, "phone": 2})
    metrics.record_pii({"card": 1}, dropped=True)
    metrics.SERVE_REQUESTS.labels(route="/v1/chat/completions", status="200").inc()
    metrics.SERVE_REQUESTS.labels(route="/v1/chat/completions", status="429").inc()
    metrics.SERVE_SECONDS.labels(mode="stream").observe(1.2)
    metrics.SERVE_TTFT_SECONDS.observe(0.3)
    metrics.SERVE_QUEUE.set(2)
    metrics.SERVE_TURNS.labels(outcome="emitted").inc()
    metrics.SERVE_TURNS.labels(outcome="failed").inc()  # a turn not recorded: the loop is open
    metrics.SERVE_FEEDBACK.labels(kind="up", outcome="annotation").inc()
    from models.serving import Answer

    metrics.record_served(Answer("text", 2, n_tokens=5, n_prompt_tokens=9, switch_seconds=0.01, loaded=True),
                          [("u1", 2)])


def _run_workload(stop: threading.Event) -> None:
    while not stop.is_set():
        _sick_tick()
        stop.wait(0.1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, **params: str) -> dict[str, Any]:
    """GET a Prometheus API endpoint; error responses (HTTP 400/422) are returned as their JSON body."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return json.loads(body)
        except ValueError:  # e.g. 503 while the TSDB is still opening
            return {"status": "error", "error": f"HTTP {exc.code}: {body[:200]!r}"}


def _query(base: str, expr: str) -> dict[str, Any]:
    return _api(base, "/api/v1/query", query=expr)


def _wait_for(check: Callable[[], bool], what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, OSError, KeyError):
            pass  # Prometheus still starting: connection refused or an error answer without data
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; Prometheus log tail:\n{tail}")


def _successful_scrapes(base: str) -> float:
    result = _query(base, f'sum_over_time(up{{job="{JOB}"}}[1m])')["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real Prometheus that has scraped the workload's exporter at least three times."""
    binary = _binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    stop = threading.Event()
    workload = threading.Thread(target=_run_workload, args=(stop,), name="sick-workload", daemon=True)
    workload.start()
    exporter, _ = start_http_server(0, addr="127.0.0.1")  # operators.metrics lives in the default registry

    config = yaml.safe_load((PROM_DIR / "prometheus.local.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROM_DIR / "alerts.yml")]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter.server_address[1]}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = _free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _successful_scrapes(base) >= 3, "three successful scrapes", 30, log_path)
        yield base
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        stop.set()
        workload.join(timeout=5)
        exporter.shutdown()
        exporter.server_close()


def _dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for title, expr in expressions(json.loads(DASHBOARD_JSON.read_text())):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"panel {title!r}: unknown Grafana variable in {expr!r}; add it to GRAFANA_VARIABLES"
        found.append((title, expr))
    return found


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_dashboard_query_returns_finite_data(prometheus: str) -> None:
    problems = []
    for title, expr in _dashboard_queries():
        answer = _query(prometheus, expr)
        if answer.get("status") != "success":
            problems.append(f"{title}: {expr}\n    error: {answer.get('error')}")
            continue
        values = [float(s["value"][1]) for s in answer["data"]["result"]]
        if not values or any(math.isnan(v) for v in values):
            problems.append(f"{title}: {expr}\n    values: {values} (workload missing this metric or label?)")
    assert not problems, "dashboard queries without data:\n" + "\n".join(problems)


def test_every_alert_expression_evaluates_as_intended(prometheus: str) -> None:
    problems = []
    for rule in _alert_rules():
        answer = _query(prometheus, rule["expr"])
        if answer.get("status") != "success":
            problems.append(f"{rule['alert']}: error {answer.get('error')}")
            continue
        found = answer["data"]["result"]
        if rule["alert"] in QUIET_WHILE_ALIVE and found:
            problems.append(f"{rule['alert']}: must find nothing while the exporter is up and busy, found {found}")
        if rule["alert"] not in QUIET_WHILE_ALIVE and not found:
            problems.append(f"{rule['alert']}: found nothing although the workload is unhealthy in its way; "
                            "extend _sick_tick or list the alert in QUIET_WHILE_ALIVE")
    assert not problems, "\n".join(problems)


def test_prometheus_loads_the_rules_and_raises_the_expected_alerts(prometheus: str) -> None:
    expected = {rule["alert"] for rule in _alert_rules()} - QUIET_WHILE_ALIVE
    state: dict[str, Any] = {}

    def settled() -> bool:
        rules = [r for g in _api(prometheus, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        state["rules"] = {r["name"]: (r["health"], r.get("lastError", "")) for r in rules}
        state["alerts"] = {a["labels"]["alertname"]: a["state"] for a in _api(prometheus, "/api/v1/alerts")["data"]["alerts"]}
        return all(h == "ok" for h, _ in state["rules"].values()) and set(state["alerts"]) == expected

    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert set(state["rules"]) == {rule["alert"] for rule in _alert_rules()}
    assert all(h == "ok" for h, _ in state["rules"].values()), state["rules"]
    # Every alert has a `for:`, so after a few seconds they are pending, not yet firing.
    assert state["alerts"] == {name: "pending" for name in expected}
