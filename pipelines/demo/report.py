"""The demo's HTML report: online AUC per month and version, each retraining's offline AUC beside
its version's online AUC the next month, drift per feature, triggers, lineage.

Charts are inline SVG written here, so the report is one self-contained file that opens
anywhere and needs no plotting package.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Sequence

from components.common import metadata
from components.common.datasets import DatasetConfig
from components.common.home import Home
from components.common.metadata import MetadataStore

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
TRIGGERS = ("new data", "performance", "distribution shift", "manual", "schedule")


def line_chart(
    x_labels: Sequence[str], series: dict[str, dict[int, float]], y_label: str, width: int = 760, height: int = 300
) -> str:
    """An SVG line chart; `series` maps a name to {x index: y}."""
    values = [y for points in series.values() for y in points.values() if not math.isnan(y)]
    if not values:
        return "<p>No data.</p>"
    low, high = min(values) - 0.01, max(values) + 0.01
    left, right, top, bottom = 50, 130, 15, 35
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (plot_w * i / max(len(x_labels) - 1, 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
        f'<text x="10" y="{top + plot_h / 2}" transform="rotate(-90 10 {top + plot_h / 2})">{html.escape(y_label)}</text>',
    ]
    for k in range(5):
        v = low + (high - low) * k / 4
        parts.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" stroke="#eee"/>')
    for i, label in enumerate(x_labels):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 15}" text-anchor="middle">{html.escape(label)}</text>')
    for n, (name, points) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        ordered = sorted((i, v) for i, v in points.items() if not math.isnan(v))
        if len(ordered) > 1:
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in ordered)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}"><title>{html.escape(name)}: {v:.4f}</title></circle>'
            for i, v in ordered
        ]
        parts.append(
            f'<text x="{left + plot_w + 10}" y="{top + 12 + 14 * n}" fill="{color}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def heat_table(
    row_labels: Sequence[str], column_labels: Sequence[str], values: dict[tuple[str, str], float], threshold: float
) -> str:
    """A table whose cells darken with their value; cells above `threshold` are bold."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in column_labels)
    body = []
    for r in row_labels:
        cells = []
        for c in column_labels:
            v = values.get((r, c))
            if v is None:
                cells.append("<td></td>")
                continue
            shade = int(255 - min(v, 1.0) * 180)
            weight = "bold" if v > threshold else "normal"
            cells.append(f'<td style="background:rgb(255,{shade},{shade});font-weight:{weight}">{v:.3f}</td>')
        body.append(f"<tr><th>{html.escape(r)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def auc_text(value: float | None) -> str:
    """An AUC with three decimals; `-` when there is none (or only one class was seen: NaN)."""
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def offline_and_next_online(rows: Sequence, index: int) -> tuple[str, str]:
    """A retraining as it was judged and as it then did: the candidate's offline AUC (its
    evaluation on the eval split) and the online AUC of the version it pushed on the next
    month's traffic (from the service's feedback); `-` for what there is not (no run, no
    evaluation, nothing pushed, no next month, the version not answering it)."""
    row = rows[index]
    following = rows[index + 1] if index + 1 < len(rows) else None
    online = None
    if row.pushed_version and following is not None and following.traffic:
        online = following.traffic["versions"].get(str(row.pushed_version), {}).get("auc")
    return auc_text(row.offline_auc), auc_text(online)


def write_report(home: Home, rows, store: MetadataStore, dataset: DatasetConfig) -> Path:
    """Writes `HOME/report.html` from the demo's month rows and what ML Metadata recorded."""
    months = [r.month for r in rows]
    auc_series: dict[str, dict[int, float]] = {}
    for i, row in enumerate(rows):
        for version, traffic in (row.traffic or {}).get("versions", {}).items():
            auc_series.setdefault(f"version {version}", {})[i] = (
                traffic["auc"] if traffic["auc"] is not None else math.nan
            )
    drift_values: dict[tuple[str, str], float] = {}
    for run in store.runs():
        for artifact in store.run_artifacts(run.run_id, metadata.DRIFT):
            span = str(artifact.properties.get("spans", ""))
            for feature, value in json.loads(str(artifact.properties.get("measures", "{}"))).items():
                drift_values[(feature, span)] = value
    features = sorted({f for f, _ in drift_values})
    fired = {t: ["x" if t in r.triggers else "" for r in rows] for t in TRIGGERS}
    trigger_rows = "".join(
        f"<tr><th>{t}</th>"
        + "".join(f"<td class='fired'>{mark}</td>" if mark else "<td></td>" for mark in marks)
        + "</tr>"
        for t, marks in fired.items()
    )
    timeline = "".join(
        f"<tr><td>{r.month}</td><td>{html.escape(r.online)}</td><td>{html.escape(r.triggers or '-')}</td>"
        f"<td>{html.escape(r.outcome)}</td>{''.join(f'<td>{auc}</td>' for auc in offline_and_next_online(rows, i))}"
        f"<td>{html.escape(_canary(store, r))}</td>"
        f"<td>{html.escape(', '.join(r.serving_after))}</td><td class='small'>{html.escape(r.reasons)}</td></tr>"
        for i, r in enumerate(rows)
    )
    not_fired = [t for t in ("new data", "performance", "distribution shift") if not any(fired[t])]
    honesty = (
        f"<p><b>Did not fire on this data:</b> {', '.join(not_fired)}. Nothing was staged to make "
        f"{'it' if len(not_fired) == 1 else 'them'} fire.</p>"
        if not_fired
        else "<p>Each of the new-data, performance and distribution-shift triggers fired on the data itself.</p>"
    )
    production = store.production_model(dataset.model_name)
    lineage = "".join(
        f"<tr><td>{html.escape(e.produced_by or '(source)')}</td><td>{html.escape(e.artifact.type)}</td>"
        f"<td class='small'>{html.escape(e.artifact.uri)}</td></tr>"
        for e in (store.lineage(production.id) if production else [])
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Continuous training: 2013 replayed</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} .small{{font-size:11px}} .fired{{background:#9ecae1;text-align:center}}</style>
</head><body><h1>Continuous training: {rows[0].month}..{rows[-1].month} replayed</h1>
<h2>Timeline</h2><table><tr><th>month</th><th>traffic: online AUC by version (requests)</th><th>triggers</th>
<th>decision</th><th>offline AUC (eval split)</th><th>its online AUC next month</th><th>canary</th>
<th>serving after</th><th>why</th></tr>{timeline}</table>
<h2>Online AUC per month and model version</h2>
<p>Each month's flights, answered live by the versions in service, scored against their true outcomes.</p>
{line_chart(months, auc_series, "online AUC")}
<h2>Which trigger fired when</h2><table><tr><th></th>{"".join(f"<th>{m}</th>" for m in months)}</tr>{trigger_rows}</table>
{honesty}
<h2>Drift per feature against the previous span (as data validation measured it)</h2>
<p>L-infinity for categorical features, Jensen-Shannon divergence for numeric ones; bold above the pipeline's threshold.</p>
{heat_table(features, sorted({s for _, s in drift_values}), drift_values, 0.1)}
<h2>Lineage of the newest live model{f" (version {production.properties['version']}, the baseline of the next run)" if production else ""}</h2>
<table><tr><th>produced by</th><th>artifact</th><th>uri</th></tr>{lineage}</table>
</body></html>"""
    path = home.root / "report.html"
    path.write_text(page)
    return path


def _canary(store: MetadataStore, row) -> str:
    if not row.run_id:
        return ""
    properties = store.run(row.run_id).properties
    return str(properties.get("canary", "")) + (
        f": {properties['canary_reason']}" if properties.get("canary_reason") else ""
    )
