"""The evaluation report of one model version as one self-contained HTML page.

Dagster's metadata table hides markdown longer than 1000 characters behind "[Show Markdown]"
and has no room for a store table, so the full report is a file: linked from the
`model_evaluation` materialization and logged in the challenger's MLflow run. It must open
anywhere, offline and from an artifact store: no external asset, no script, no network. The
CSS is inline and the plots are PNGs embedded as base64 data URIs.

Pure functions, no Dagster: `render` takes what `model_evaluation` computed (the metric tables
of `report.report_tables`, the PNGs of `plots`, the interval coverage of
`intervals.coverage_by_bucket`, the gate's decision) and returns the page as a string.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ml_assets.evaluation.oracle import ORACLE, ORIGIN_ORACLE

REPORT_DIR = ("reports", "model_evaluation")
# The noise floors know the future: never "best" in a table, or every table's best would be
# a forecaster nobody can deploy.
REFERENCE_ONLY = frozenset({ORACLE, ORIGIN_ORACLE})
# What each metric column means, in the words a planner reads (metrics.py has the definitions)
METRIC_HEADERS = {
    "wape": ("WAPE", "sum |forecast - actual| / sum actual: the share of units misallocated"),
    "mae": ("MAE", "mean |forecast - actual|, in units sold per row"),
    "rmse": ("RMSE", "root mean squared error, in units sold per row"),
    "bias": ("bias", "sum(forecast - actual) / sum actual; positive = over-forecast"),
    "mase": ("MASE", "MAE over the in-sample MAE of seasonal naive (below 1: better)"),
    "rmspe": ("RMSPE", "root mean squared percentage error, rows with a non-zero actual"),
    "n": ("rows", "scored rows (store x item x date x origin)"),
}
SCOPES = {  # report_tables' scope → the section's title
    "overall": "Overall",
    "horizon_bucket": "By horizon bucket",
    "store": "By store",
    "category": "By category",
}
COVERAGE_HEADERS = {
    "bucket": "horizon bucket", "rows": "rows", "coverage": "coverage",
    "below": "actual below", "above": "actual above", "mean_width": "mean width (units)",
    "relative_width": "width / mean actual",
}
SHARES = frozenset({"coverage", "below", "above"})  # shown as percentages

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2328;
max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px}.sub{color:#57606a;margin:0 0 16px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:0}dt{color:#57606a}
dd{margin:0}.gate{padding:12px 16px;border-radius:6px;border:1px solid;margin:12px 0}
.passed{background:#dafbe1;border-color:#4ac26b}.blocked{background:#ffebe9;border-color:#ff8182}
.gate b{font-size:15px}.gate p{margin:6px 0 0;white-space:pre-wrap}
table{border-collapse:collapse;margin:4px 0 8px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa;font-weight:600}td.k,th.k{text-align:left}
tr.challenger td:not([rowspan]){background:#ddf4ff}td.best{font-weight:700}
.note{color:#57606a;font-size:13px;margin:2px 0 8px}
figure{margin:8px 0 16px}figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:13px}
"""


@dataclass(frozen=True)
class EvaluationReport:
    """What one evaluation found, as `render` shows it."""

    challenger_version: str
    gate_passed: bool
    gate_reason: str  # the gate's sentence, shown in full
    tables: Mapping[str, pl.DataFrame]  # scope → metric table (report.report_tables)
    images: Mapping[str, bytes] = field(default_factory=dict)  # caption → PNG
    coverage: pl.DataFrame | None = None  # intervals.coverage_by_bucket's table
    coverage_note: str = ""  # how coverage was measured, or why there is none
    facts: Mapping[str, str] = field(default_factory=dict)  # label → value, shown on top
    notes: Mapping[str, str] = field(default_factory=dict)  # scope or "plots" → a sentence


def report_path(home: Path, version: str) -> Path:
    """Where the report of model version `version` lives: one stable file per version, so a
    re-evaluation replaces it and a link to it keeps working."""
    return home.joinpath(*REPORT_DIR, f"v{version}.html")


def fmt(value: object) -> str:
    """A cell: 4 significant digits for floats (enough to compare, short enough to scan),
    thousands separators for counts, "nan" for undefined (never a flattering 0)."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _e(value: object) -> str:
    """A value as element text (quotes need no escaping there: a sentence stays greppable)."""
    return html.escape(fmt(value), quote=False)


def _header(columns: Sequence[str]) -> str:
    cells = []
    for i, col in enumerate(columns):
        label, title = METRIC_HEADERS.get(col, (col.replace("_", " "), ""))
        cls = ' class="k"' if i < 2 and col not in METRIC_HEADERS else ""
        tip = f' title="{html.escape(title)}"' if title else ""
        cells.append(f"<th{cls}{tip}>{html.escape(label)}</th>")
    return f"<thead><tr>{''.join(cells)}</tr></thead>"


def _best(rows: list[dict]) -> str | None:
    """The forecaster with the lowest WAPE among `rows` (one group), reference ones apart."""
    scored = [(r["wape"], r["forecaster"]) for r in rows
              if r["forecaster"] not in REFERENCE_ONLY and isinstance(r.get("wape"), float)
              and not math.isnan(r["wape"])]
    return min(scored)[1] if scored else None


def metric_table_html(table: pl.DataFrame) -> str:
    """A report_tables frame as an HTML table: one row per (group, forecaster), the group cell
    spanning its forecasters, the challenger's rows shaded and each group's best WAPE bold."""
    if table.is_empty():
        return '<p class="note">no scored rows</p>'
    grouped = table.columns[0] != "forecaster"
    group_col = table.columns[0] if grouped else None
    groups: dict[object, list[dict]] = {}
    for row in table.iter_rows(named=True):
        groups.setdefault(row[group_col] if group_col else None, []).append(row)
    body = []
    for group, rows in groups.items():
        best = _best(rows)
        for i, row in enumerate(rows):
            name = row["forecaster"]
            cls = ' class="challenger"' if name == "challenger" else ""
            cells = []
            if grouped and i == 0:
                cells.append(f'<td class="k" rowspan="{len(rows)}">{_e(group)}</td>')
            cells.append(f'<td class="k">{_e(name)}</td>')
            for col in table.columns[2 if grouped else 1:]:
                bold = ' class="best"' if col == "wape" and name == best else ""
                cells.append(f"<td{bold}>{_e(row[col])}</td>")
            body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table>{_header(table.columns)}<tbody>{''.join(body)}</tbody></table>"


def coverage_table_html(coverage: pl.DataFrame) -> str:
    """The interval coverage by horizon bucket; shares as percentages."""
    head = "".join(f'<th{" class=k" if c == "bucket" else ""}>'
                   f"{html.escape(COVERAGE_HEADERS.get(c, c))}</th>" for c in coverage.columns)
    body = []
    for row in coverage.iter_rows(named=True):
        cells = []
        for col, value in row.items():
            shown = (f"{value:.1%}" if col in SHARES and isinstance(value, float)
                     and not math.isnan(value) else fmt(value))
            cls = ' class="k"' if col == "bucket" else ""
            cells.append(f"<td{cls}>{html.escape(shown)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def image_html(caption: str, png: bytes) -> str:
    """A PNG embedded as a data URI: the page stays one file that needs no network."""
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption, quote=False)}</figcaption></figure>")


def gate_html(passed: bool, reason: str) -> str:
    verdict = "Passed" if passed else "Blocked"
    return (f'<div class="gate {verdict.lower()}"><b>Promotion gate: {verdict}</b>'
            f"<p>{html.escape(reason, quote=False)}</p></div>")


def facts_html(facts: Mapping[str, str]) -> str:
    items = "".join(f"<dt>{html.escape(k, quote=False)}</dt><dd>{html.escape(v, quote=False)}</dd>"
                    for k, v in facts.items())
    return f"<dl>{items}</dl>" if items else ""


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text, quote=False)}</p>' if text else ""


def render(report: EvaluationReport) -> str:
    """The whole page. Sections in the order a reviewer decides in: the gate, the headline
    table, where the error sits (horizon, store, category), intervals, then the plots."""
    version = html.escape(report.challenger_version)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Model evaluation: v{version}</title><style>{CSS}</style></head><body>",
        f"<h1>Model evaluation: demand_forecaster v{version}</h1>",
        '<p class="sub">Rolling-origin backtest: every forecaster refitted at each origin and '
        "scored out of sample on the same rows, as they would have been served.</p>",
        gate_html(report.gate_passed, report.gate_reason),
        facts_html(report.facts),
    ]
    legend = "; ".join(f"{label}: {title}" for label, title in METRIC_HEADERS.values())
    for scope, title in SCOPES.items():
        table = report.tables.get(scope)
        if table is None:
            continue
        parts += [f'<h2 id="{scope}">{html.escape(title)}</h2>', _note(report.notes.get(scope,
                                                                                         "")),
                  metric_table_html(table)]
        if scope == "overall":
            parts.append(_note(f"{legend}. Shaded: the challenger; bold: the lowest WAPE of "
                               "each group among deployable forecasters."))
    parts.append('<h2 id="intervals">Prediction interval coverage by horizon bucket</h2>')
    if report.coverage is not None:
        parts += [_note(report.coverage_note), coverage_table_html(report.coverage)]
    else:
        parts.append(_note(report.coverage_note or "no prediction intervals"))
    if report.images:
        parts += ['<h2 id="plots">Plots</h2>', _note(report.notes.get("plots", ""))]
        parts += [image_html(caption, png) for caption, png in report.images.items()]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"
