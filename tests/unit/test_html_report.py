"""The evaluation report page (ml_assets.evaluation.html_report) on a real backtest of a small
hand-made panel: run_backtest, report_tables, the plots and the interval coverage, as
`model_evaluation` builds them, rendered to one self-contained page."""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml_assets.evaluation import plots
from ml_assets.evaluation.baselines import moving_average, seasonal_naive
from ml_assets.evaluation.html_report import EvaluationReport, fmt, render, report_path
from ml_assets.evaluation.report import (
    BacktestSpec,
    Candidate,
    intervals_for,
    report_tables,
    run_backtest,
)

START = dt.date(2024, 1, 1)
SPEC = BacktestSpec(horizon=7, period_days=1, season=7, ma_window=7, train_window=28)
FORECASTERS = ["challenger", "seasonal_naive", "moving_average_7"]
STORES = ("s1", "s2", "s<3>")  # one id that HTML would misread unless escaped
GATE = ("Blocked: the challenger's WAPE 0.4123 is not at least 1.0% below the champion's "
        "0.4100 (needs <= 0.4059). The champion stays, and this sentence is long enough that "
        "a table cell would cut it off: it must appear in full, word for word.")


def _panel(days: int = 60) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(START + dt.timedelta(days=i), s, "i1", float(rng.poisson(5 + (i % 7) + k)),
             "food" if k % 2 else "drink")
            for i in range(days) for k, s in enumerate(STORES)]
    return pl.DataFrame(rows, schema=["date", "store_id", "item_id", "units_sold",
                                      "item_category"], orient="row")


def _rows_at(panel: pl.DataFrame):  # noqa: ANN202
    """What `rows_at_origin` serves, on the panel: the horizon's rows and their baselines."""
    def rows_at(origin: dt.date) -> tuple[pl.DataFrame, str]:
        history = panel.filter(pl.col("date") <= origin)
        rows = panel.filter(pl.col("date") > origin,
                            pl.col("date") <= origin + dt.timedelta(days=SPEC.horizon))
        rows = rows.with_columns(origin=pl.lit(origin, pl.Date), forced_zero=pl.lit(False),
                                 horizon=(pl.col("date") - pl.lit(origin)).dt.total_days()
                                 .cast(pl.Int32))
        return rows.with_columns(seasonal_naive(history, rows, 7, 1),
                                 moving_average(history, rows, 7, 1)), "actuals"
    return rows_at


def _mean_refit(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
    """A stand-in model: each store's mean over its training window."""
    means = train.group_by("store_id").agg(pl.col("units_sold").mean().alias("m"))
    return rows.join(means, on="store_id", how="left").get_column("m").to_numpy()


@pytest.fixture(scope="module")
def evaluated() -> dict:
    panel = _panel()
    heard: list[tuple[int, int, dt.date]] = []
    backtest, sources = run_backtest(panel, _rows_at(panel), SPEC,
                                     [Candidate("challenger", _mean_refit)],
                                     progress=lambda i, n, o: heard.append((i, n, o)))
    tables = report_tables(backtest, panel, SPEC, FORECASTERS)
    document, coverage, measured = intervals_for(backtest, "challenger", 0.8, 1)
    images = plots.report_images(backtest, FORECASTERS, 1, {"lag_7": 3.0, "price": 1.0})
    report = EvaluationReport(
        challenger_version="7", gate_passed=False, gate_reason=GATE, tables=tables,
        images={plots.CAPTIONS[k]: png for k, png in images.items()}, coverage=coverage,
        coverage_note=f"80% intervals, measured {measured}",
        facts={"origins (known future)": ", ".join(f"{o} ({s})" for o, s in sources.items())})
    return {"page": render(report), "report": report, "tables": tables, "images": images,
            "heard": heard, "origins": sorted(backtest.get_column("origin").unique()),
            "document": document}


def _section(page: str, anchor: str) -> str:
    """The page from the heading `anchor` up to the next heading."""
    start = page.index(f'<h2 id="{anchor}">')
    end = page.find("<h2", start + 1)
    return page[start:end if end > 0 else len(page)]


def test_the_backtest_reports_each_origin_as_it_starts(evaluated: dict) -> None:
    origins = evaluated["origins"]
    assert len(origins) == 3
    assert evaluated["heard"] == [(i, 3, o) for i, o in enumerate(origins, start=1)]


def test_every_table_with_every_group_and_forecaster(evaluated: dict) -> None:
    page, tables = evaluated["page"], evaluated["tables"]
    for scope in ("overall", "horizon_bucket", "store", "category"):
        section = _section(page, scope)
        assert section.count("<table>") == 1
        # one row per (group, forecaster), as report_tables has them
        assert section.count("<tr") - 1 == tables[scope].height
        for name in FORECASTERS:
            assert f'<td class="k">{name}</td>' in section
    store = _section(page, "store")
    for store_id in STORES:
        assert f'rowspan="3">{html.escape(store_id)}</td>' in store
    assert "<3>" not in store  # escaped, not markup
    assert 'rowspan="3">drink</td>' in _section(page, "category")
    assert 'rowspan="3">1-7</td>' in _section(page, "horizon_bucket")
    # the challenger's overall WAPE, as the table shows every number: 4 significant digits
    wape = tables["overall"].filter(pl.col("forecaster") == "challenger").item(0, "wape")
    assert re.search(rf'<td( class="best")?>{re.escape(fmt(wape))}</td>',
                     _section(page, "overall"))


def test_the_gate_sentence_in_full_and_its_verdict(evaluated: dict) -> None:
    page = evaluated["page"]
    assert f"<p>{html.escape(GATE, quote=False)}</p>" in page
    assert "Promotion gate: Blocked" in page and 'class="gate blocked"' in page
    # before any table: the decision is what a reviewer reads first
    assert page.index("Promotion gate") < page.index("<table>")


def test_the_plots_are_embedded_and_the_origins_listed(evaluated: dict) -> None:
    page, images = evaluated["page"], evaluated["images"]
    embedded = [base64.b64decode(data) for data in
                re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    # the very PNGs plots.py drew: forecast vs actual (with the origins marked, tested in
    # test_plots), error by horizon, feature importance
    assert embedded == list(images.values())
    for caption in plots.CAPTIONS.values():
        assert html.escape(caption, quote=False) in page
    for origin in evaluated["origins"]:
        assert f"{origin} (actuals)" in page


def test_interval_coverage_by_bucket_when_it_exists(evaluated: dict) -> None:
    section = _section(evaluated["page"], "intervals")
    coverage = evaluated["report"].coverage
    assert "measured leave one origin out (3 origins)" in section
    assert section.count("<tr") - 1 == coverage.height  # the buckets and `all`
    share = coverage.filter(pl.col("bucket") == "all").item(0, "coverage")
    assert f"<td>{share:.1%}</td>" in section
    without = render(EvaluationReport("7", True, "Passed.", evaluated["tables"],
                                      coverage_note="none: no backtest row has an actual"))
    intervals = _section(without, "intervals")
    assert "<table>" not in intervals and "none: no backtest row has an actual" in intervals
    assert 'class="gate passed"' in without


def test_the_page_is_self_contained(evaluated: dict) -> None:
    page = evaluated["page"]
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing fetched: no remote (or any non-data) src/href, no script, no stylesheet link
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.IGNORECASE)
    assert references and all(r.startswith("data:image/png;base64,") for r in references)
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page


def test_best_wape_is_bold_among_deployable_forecasters_only() -> None:
    overall = pl.DataFrame({"forecaster": ["challenger", "seasonal_naive", "oracle"],
                            "wape": [0.4, 0.5, 0.3], "n": [10, 10, 10]})
    page = render(EvaluationReport("1", True, "Passed.", {"overall": overall}))
    assert '<td class="best">0.4</td>' in page  # the oracle knows the future: not "best"
    assert page.count('class="best"') == 1
    nan = render(EvaluationReport("1", True, "Passed.",
                                  {"overall": overall.with_columns(wape=pl.lit(float("nan")))}))
    assert "<td>nan</td>" in nan and 'class="best"' not in nan


def test_report_path_is_stable_per_version(tmp_path: Path) -> None:
    assert report_path(tmp_path, "12") == tmp_path / "reports" / "model_evaluation" / "v12.html"
    assert report_path(tmp_path, "12") != report_path(tmp_path, "1")
