"""infra/dashboards.py: the committed JSON is current, well formed, and covers every metric.

The queries themselves run against a real Prometheus in test_prometheus.py.
"""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from infra import dashboards
from operators import metrics

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def _committed() -> dict:
    return json.loads(dashboards.OUT.read_text(encoding="utf-8"))


def _all_panels(model: dict) -> list[dict]:
    return [p for item in model["panels"] for p in [item, *item.get("panels", [])]]


def test_committed_dashboard_is_current() -> None:
    result = subprocess.run([sys.executable, "-m", "infra.dashboards", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_file_and_passes_after_regenerating(tmp_path: Path, capsys) -> None:
    out = tmp_path / "edgetune.json"
    out.write_text("{}\n")
    assert dashboards.main(["--check", "--out", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert dashboards.main(["--out", str(out)]) == 0
    assert dashboards.main(["--check", "--out", str(out)]) == 0
    assert out.read_text() == dashboards.render()


def test_docstring_examples() -> None:
    failed, attempted = doctest.testmod(dashboards)
    assert attempted > 0 and failed == 0


def test_every_metric_family_has_a_panel() -> None:
    families = {f.name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase) for f in m.describe()}
    assert len(families) >= 20  # sanity: the module was introspected, not an empty namespace
    used = {name for _, expr in dashboards.expressions(_committed()) for name in re.findall(r"edgetune_[a-z0-9_]+", expr)}
    missing = sorted(f for f in families if not any(f + suffix in used for suffix in SAMPLE_SUFFIXES))
    assert not missing, f"metrics without a dashboard panel: {missing}; add a Panel to ROWS in infra/dashboards.py"


def test_rows_and_datasource_variable() -> None:
    model = _committed()
    assert model["schemaVersion"] == 39 and model["uid"] == "edgetune"
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Stream", "Selection", "Latency", "Personalization", "Serving"]
    (variable,) = model["templating"]["list"]
    assert (variable["type"], variable["name"], variable["query"]) == ("datasource", "datasource", "prometheus")
    for panel in _all_panels(model):
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat", "bargauge", "heatmap"), panel["title"]
        assert panel["targets"], panel["title"]
        refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), panel["title"]
        if panel["type"] == "heatmap":
            assert {t["format"] for t in panel["targets"]} == {"heatmap"} and panel["options"]["calculate"] is False


def test_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = _all_panels(_committed())
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    taken: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{p['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = p["title"]


def test_panel_ids_survive_inserting_a_panel() -> None:
    before = {p["title"]: p["id"] for p in _all_panels(dashboards.build_dashboard())}
    first, *rest = dashboards.ROWS
    extra = dashboards.Panel("A new panel", dashboards.gauge("edgetune_users"))
    grown = (dashboards.Row(first.title, (extra, *first.panels)), *rest)
    after = {p["title"]: p["id"] for p in _all_panels(dashboards.build_dashboard(grown))}
    assert {t: after[t] for t in before} == before


def test_duplicate_titles_are_refused() -> None:
    p = dashboards.Panel("Same", dashboards.gauge("edgetune_users"))
    try:
        dashboards.build_dashboard((dashboards.Row("R", (p, p)),))
    except ValueError as exc:
        assert "Same" in str(exc) and "unique" in str(exc)
    else:
        raise AssertionError("duplicate panel titles were accepted")
