"""edgetune's Grafana dashboard, generated from the compact panel list ``ROWS``.

    python -m infra.dashboards          # rewrite infra/grafana/dashboards/edgetune.json
    python -m infra.dashboards --check  # exit 1 if the committed JSON is stale

A panel is one entry: a title, one or more PromQL queries built by the helpers
below (``rate``, ``quantiles``, ``mean``, ``buckets``, ``share``, ``total``,
``gauge``), a unit and a kind. Everything Grafana needs besides that (grid
position, ids, options per visualization, the datasource variable) is derived,
so the output is the same byte for byte on every run.

>>> p = Panel("Events/s", rate("edgetune_events_total", by="outcome"), unit="ops")
>>> p.queries[0].expr
'sum by (outcome) (rate(edgetune_events_total[$__rate_interval]))'
>>> [q.legend for q in quantiles("edgetune_embed_seconds", 0.5, 0.95)]
['p50', 'p95']
>>> panels = build_dashboard((Row("Stream", (p,)),))["panels"]
>>> [(x["type"], x["gridPos"]["y"]) for x in panels]
[('row', 0), ('timeseries', 1)]

Panel ids are a hash of the title, not a position: inserting or moving a panel
keeps every other panel's id, so links to ``viewPanel=<id>`` stay valid.
Rate windows use Grafana's ``$__rate_interval`` (at least four scrape
intervals); "over the dashboard range" panels use ``$__range``.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

Kind = Literal["timeseries", "stat", "bargauge", "heatmap"]

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards" / "edgetune.json"
RATE = "$__rate_interval"
RANGE = "$__range"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    """One PromQL target: ``legend`` is a Grafana legend format such as ``{{outcome}}``."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """One visualization; ``queries`` takes Query objects or tuples of them (from ``quantiles``)."""

    title: str
    queries: Query | Sequence[Query | Sequence[Query]]
    unit: str = "short"
    kind: Kind = "timeseries"
    description: str = ""
    width: int = 8
    stack: bool = False
    red_above: float | None = None  # threshold colouring for stat/bargauge (e.g. an alert's threshold)

    def __post_init__(self) -> None:
        flat = tuple(_flatten(self.queries))
        if not flat:
            raise ValueError(f"panel {self.title!r}: queries is empty; give at least one Query")
        if not 1 <= self.width <= GRID_WIDTH:
            raise ValueError(f"panel {self.title!r}: width={self.width} must be within 1..{GRID_WIDTH}")
        object.__setattr__(self, "queries", flat)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _flatten(queries: Any) -> Iterator[Query]:
    if isinstance(queries, Query):
        yield queries
        return
    for q in queries:
        yield from _flatten(q)


# --- PromQL helpers: each returns Query objects ------------------------------------------------


def _sel(metric: str, where: str) -> str:
    return f"{metric}{{{where}}}" if where else metric


def _sum(inner: str, by: str) -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def rate(counter: str, by: str = "", where: str = "", legend: str = "") -> Query:
    """Per-second rate of a counter, summed over instances (and split by one label ``by``)."""
    return Query(_sum(f"rate({_sel(counter, where)}[{RATE}])", by), legend or (f"{{{{{by}}}}}" if by else counter))


def total(counter: str, by: str = "", where: str = "", window: str = RANGE) -> Query:
    """Increase of a counter over ``window``; over the dashboard range it is one instant value per ``by``.

    Use a fixed window such as ``1h`` for things that happen a few times an hour (training runs),
    where a per-second rate over ``$__rate_interval`` would be mostly empty.
    """
    return Query(_sum(f"increase({_sel(counter, where)}[{window}])", by), f"{{{{{by}}}}}" if by else "total",
                 instant=window == RANGE)


def gauge(metric: str, by: str = "", legend: str = "") -> Query:
    """A gauge summed over instances."""
    return Query(_sum(metric, by), legend or (f"{{{{{by}}}}}" if by else metric))


def quantiles(histogram: str, *qs: float, by: str = "", where: str = "", window: str = RATE) -> tuple[Query, ...]:
    """``histogram_quantile`` of a histogram, one query per quantile (``window``: see ``total``)."""
    keys = f"{by}, le" if by else "le"
    bucket_rate = f"rate({_sel(histogram + '_bucket', where)}[{window}])"
    return tuple(
        Query(
            f"histogram_quantile({q:g}, sum by ({keys}) ({bucket_rate}))",
            (f"{{{{{by}}}}} " if by else "") + f"p{round(q * 100)}",
        )
        for q in qs
    )


def mean(histogram: str, legend: str = "mean", window: str = RATE) -> Query:
    """Mean observation over ``window``: rate of the sum over rate of the count."""
    return Query(f"sum(rate({histogram}_sum[{window}])) / sum(rate({histogram}_count[{window}]))", legend)


def buckets(histogram: str, where: str = "") -> Query:
    """Bucket rates for a heatmap (Grafana de-accumulates the ``le`` buckets itself)."""
    return Query(f"sum by (le) (rate({_sel(histogram + '_bucket', where)}[{RATE}]))", "{{le}}")


def share(part: str, whole: str, legend: str = "share") -> Query:
    """Fraction ``part / whole`` of two counters' increases over the dashboard range."""
    return Query(f"sum(increase({part}[{RANGE}])) / sum(increase({whole}[{RANGE}]))", legend, instant=True)


# --- The dashboard: one entry per panel ----------------------------------------------------------

ROWS: tuple[Row, ...] = (
    Row("Stream", (
        Panel("Events/s by outcome", rate("edgetune_events_total", by="outcome"), unit="ops", stack=True,
              description="What the selection did with each event; dead_letter counts payloads rejected at parse time."),
        Panel("Dead letters/s by reason", rate("edgetune_dead_letters_total", by="reason"), unit="ops", stack=True),
        Panel("Embedded events/s", rate("edgetune_embedded_events_total", legend="embedded"), unit="ops"),
        Panel("Dead-letter share", share("edgetune_dead_letters_total", "edgetune_events_total"), unit="percentunit",
              kind="stat", width=4, red_above=0.05, description="Over the dashboard range; the alert fires above 5%."),
        Panel("Users with state", gauge("edgetune_users", legend="users"), kind="stat", width=4),
        Panel("Kafka positions lost (range)", total("edgetune_kafka_offset_loss_total", by="kind"), kind="bargauge",
              description="Resumed partitions whose saved offset the broker no longer had (kind); alert "
                          "EdgetuneKafkaOffsetLost. With kafka.on_offset_loss=fail the run stopped."),
        Panel("PII redacted and dropped/s by kind",
              (rate("edgetune_pii_redacted_total", by="kind", legend="redacted {{kind}}"),
               rate("edgetune_pii_dropped_total", by="kind", legend="dropped {{kind}}")), unit="ops", stack=True,
              description="E-mail addresses, phone, card and account numbers and street addresses found in the "
                          "text (privacy.pii): replaced by a token before anything is stored, or, with drop, in "
                          "events dead-lettered as pii. Empty with privacy.pii=off."),
    )),
    Row("Selection", (
        Panel("Buffered samples by policy", gauge("edgetune_buffer_samples", by="policy")),
        Panel("Replacements/s by policy", rate("edgetune_buffer_replacements_total", by="policy"), unit="ops"),
        Panel("Admitted/s by domain", rate("edgetune_admitted_total", by="domain"), unit="ops", stack=True),
        Panel("Admitted by domain (range)", total("edgetune_admitted_total", by="domain"), kind="bargauge"),
        Panel("Score quantiles", quantiles("edgetune_score", 0.1, 0.5, 0.9, by="score"), unit="none", width=16),
        Panel("EOE distribution", buckets("edgetune_score", 'score="eoe"'), unit="none", kind="heatmap"),
        Panel("DSS distribution", buckets("edgetune_score", 'score="dss"'), unit="none", kind="heatmap"),
        Panel("IDD distribution", buckets("edgetune_score", 'score="idd"'), unit="none", kind="heatmap"),
    )),
    Row("Latency", (
        Panel("Embedding seconds per batch", quantiles("edgetune_embed_seconds", 0.5, 0.95), unit="s"),
        Panel("Scoring seconds per event", quantiles("edgetune_score_seconds", 0.5, 0.95), unit="s"),
        Panel("Selection seconds per event", quantiles("edgetune_select_seconds", 0.5, 0.95), unit="s"),
    )),
    Row("Personalization", (
        Panel("Annotation requests and answers/s",
              (rate("edgetune_annotation_requests_total", legend="requested"), rate("edgetune_annotations_total", by="status")),
              unit="ops"),
        Panel("Answer latency (event time)", quantiles("edgetune_annotation_latency_seconds", 0.5, 0.95), unit="s"),
        Panel("Unanswered share", share('edgetune_annotations_total{status="unanswered"}', "edgetune_annotation_requests_total"),
              unit="percentunit", kind="stat", width=4, red_above=0.5,
              description="Requests evicted before the user answered, over the dashboard range."),
        Panel("Training queue", gauge("edgetune_train_queue", legend="users waiting"), kind="stat", width=4),
        Panel("Synthetic pairs/s by outcome", rate("edgetune_synthetic_pairs_total", by="outcome"), unit="ops", stack=True,
              description="Empty while synth.k is 0, the default: synthesis is off unless turned on."),
        Panel("Synthesis seconds per sample", quantiles("edgetune_synth_seconds", 0.5, 0.95), unit="s",
              description="Empty while synth.k is 0, the default."),
        # Training happens a few times an hour at most: these panels use fixed 1h windows, not per-second rates.
        Panel("Training windows by trigger (1h)", total("edgetune_train_windows_total", by="trigger", window="1h"),
              description="What closed each window: a count of events, an event-time boundary, or the end of a replay."),
        Panel("Training windows by outcome (1h)", total("edgetune_train_requests_total", by="outcome", window="1h")),
        Panel("Training runs by outcome (range)", total("edgetune_train_runs_total", by="outcome"), kind="bargauge"),
        Panel("Training loss, last step (1h)",
              (mean("edgetune_train_loss", window="1h"), quantiles("edgetune_train_loss", 0.9, window="1h")), unit="none"),
        Panel("Training step seconds (1h)", quantiles("edgetune_train_step_seconds", 0.5, 0.95, window="1h"), unit="s"),
        Panel("Training tokens/s (last run)", gauge("edgetune_train_tokens_per_second", by="instance"), unit="short"),
        Panel("Samples per training run (1h)", quantiles("edgetune_train_samples", 0.5, 0.95, window="1h"), unit="none"),
        Panel("Adapter versions written (range)", total("edgetune_adapter_versions_total"), kind="stat", width=4),
    )),
    Row("Serving", (
        Panel("Requests/s by route and status", rate("edgetune_serve_requests_total", by="route, status",
                                                     legend="{{route}} {{status}}"), unit="ops", stack=True,
              description="`edgetune serve`; 429: refused because serve.max_queue requests already waited."),
        Panel("Answer seconds by mode", quantiles("edgetune_serve_seconds", 0.5, 0.95, by="mode"), unit="s",
              description="From the request to the whole answer, plain or streamed."),
        Panel("Time to first token", quantiles("edgetune_serve_ttft_seconds", 0.5, 0.95), unit="s",
              description="From the request entering the generation queue to its first text (waiting included)."),
        Panel("Tokens generated/s", rate("edgetune_serve_tokens_total", legend="tokens"), unit="ops"),
        Panel("Answers/s by model", rate("edgetune_serve_answers_total", by="model"), unit="ops", stack=True,
              description="base: the user had no promoted adapter; adapter: their latest version answered."),
        Panel("Resident adapter version by user", gauge("edgetune_serve_adapter_version", by="user"), kind="bargauge",
              unit="none", description="The version each loaded user adapter has (at most serve.max_resident users)."),
        Panel("Adapter loads/s and switch seconds",
              (rate("edgetune_serve_adapter_loads_total", legend="loads/s"),
               quantiles("edgetune_serve_adapter_switch_seconds", 0.95)), unit="short"),
        Panel("Generation queue", gauge("edgetune_serve_queue", legend="running + waiting"), kind="stat", width=4),
        Panel("Served turns/s by outcome", rate("edgetune_serve_turns_total", by="outcome"), unit="ops", stack=True,
              description="emitted: into the stream as a conversation event; failed: not recorded (503); "
                          "cancelled: the client left mid-stream."),
        Panel("Feedback/s by kind", rate("edgetune_serve_feedback_total", by="kind, outcome",
                                         legend="{{kind}} {{outcome}}"), unit="ops", stack=True,
              description="Thumbs up/down, preferred answers and answered annotation requests; outcome says whether "
                          "it became an annotation (a thumbs-down alone does not)."),
    )),
)


# --- Rendering to Grafana's JSON model -------------------------------------------------------------


def panel_id(title: str) -> int:
    """Stable positive id from the title (31-bit CRC32)."""
    return zlib.crc32(title.encode("utf-8")) & 0x7FFFFFFF


def _thresholds(red_above: float | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {"mode": "absolute", "steps": steps}


def _field_defaults(p: Panel) -> dict[str, Any]:
    if p.kind == "timeseries":
        return {
            "unit": p.unit,
            "color": {"mode": "palette-classic"},
            "custom": {
                "drawStyle": "line",
                "fillOpacity": 25 if p.stack else 8,
                "lineWidth": 1,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"group": "A", "mode": "normal" if p.stack else "none"},
            },
        }
    if p.kind == "heatmap":
        return {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}, "scaleDistribution": {"type": "linear"}}}
    return {"unit": p.unit, "color": {"mode": "thresholds"}, "thresholds": _thresholds(p.red_above)}


_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def _options(p: Panel) -> dict[str, Any]:
    if p.kind == "timeseries":
        return {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if p.kind == "stat":
        return {"colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                "reduceOptions": _REDUCE_LAST, "textMode": "auto"}
    if p.kind == "bargauge":
        return {"displayMode": "gradient", "minVizHeight": 16, "minVizWidth": 8, "orientation": "horizontal",
                "reduceOptions": _REDUCE_LAST, "showUnfilled": True, "valueMode": "color"}
    return {  # heatmap of pre-bucketed Prometheus histograms
        "calculate": False,
        "cellGap": 1,
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False, "scale": "exponential",
                  "scheme": "Oranges", "steps": 64},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": False},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": p.unit},
    }


def _target(q: Query, ref_id: str, kind: Kind) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": q.expr,
        "format": "heatmap" if kind == "heatmap" else "time_series",
        "instant": q.instant,
        "legendFormat": q.legend or "__auto",
        "range": not q.instant,
        "refId": ref_id,
    }


def _panel(p: Panel, x: int, y: int) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "description": p.description,
        "fieldConfig": {"defaults": _field_defaults(p), "overrides": []},
        "gridPos": {"h": PANEL_HEIGHT, "w": p.width, "x": x, "y": y},
        "id": panel_id(p.title),
        "options": _options(p),
        "targets": [_target(q, chr(ord("A") + i), p.kind) for i, q in enumerate(p.queries)],
        "title": p.title,
        "type": p.kind,
    }


def _row(title: str, y: int) -> dict[str, Any]:
    return {"collapsed": False, "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}, "id": panel_id("row:" + title),
            "panels": [], "title": title, "type": "row"}


def build_dashboard(rows: Sequence[Row] = ROWS) -> dict[str, Any]:
    """The dashboard as Grafana's (classic) JSON model; rows are laid out left to right, wrapping at 24 columns."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        panels.append(_row(row.title, y))
        y += 1
        x = 0
        for p in row.panels:
            if x + p.width > GRID_WIDTH:
                x, y = 0, y + PANEL_HEIGHT
            panels.append(_panel(p, x, y))
            x += p.width
        if row.panels:
            y += PANEL_HEIGHT
    seen: dict[int, str] = {}
    for item in panels:
        if item["id"] in seen:
            raise ValueError(f"panel {item['title']!r}: id {item['id']} clashes with {seen[item['id']]!r}; titles must be unique")
        seen[item["id"]] = item["title"]
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": "edgetune: selection stream, latency and the personalization loop. Generated by `python -m infra.dashboards`; edit infra/dashboards.py, not this file.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["edgetune"],
        "templating": {"list": [{
            "current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False, "name": "datasource",
            "options": [], "query": "prometheus", "refresh": 1, "regex": "", "type": "datasource",
        }]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "edgetune",
        "uid": "edgetune",
        "version": 1,
        "weekStart": "",
    }


def render(rows: Sequence[Row] = ROWS) -> str:
    """The dashboard JSON text exactly as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(build_dashboard(rows), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expressions(model: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every query of a dashboard model, including panels inside collapsed rows."""
    found: list[tuple[str, str]] = []
    for item in model.get("panels", []):
        for inner in [item, *item.get("panels", [])]:
            found.extend((inner["title"], t["expr"]) for t in inner.get("targets", []))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.dashboards", description="Generate edgetune's Grafana dashboard JSON.")
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file differs from what would be generated.")
    parser.add_argument("--out", type=Path, default=OUT, help=f"Dashboard JSON path (default {OUT}).")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"{args.out} is stale: run `python -m infra.dashboards` and commit the result", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(expressions(json.loads(text)))} queries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
