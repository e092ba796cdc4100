"""Small PNG plots of a backtest, for the evaluation report (`html_report`) and MLflow.

Every function builds its own `matplotlib.figure.Figure` and renders it with the Agg canvas:
pyplot's global figure registry is never touched, so the functions are safe to call from
concurrent Dagster steps and leave no open figures behind. Images are kept small because
the report embeds them base64, so that it opens offline as one file.

Input frames are backtest frames (`backtest.backtest_frame` plus forecasts): `store_id`,
`item_id`, `date`, `origin`, `horizon`, the actual `units_sold` and one Float64 column per
forecaster. A forecaster whose column is missing or all null is skipped; degenerate inputs
give an image that says why it is empty rather than an exception, since a plot must never
fail the asset that reports it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ml_assets.evaluation.metrics import metric_table

ACTUAL = "units_sold"
KEYS = ["store_id", "item_id"]
DPI = 80
# Stable colours per position in `forecasters`, so a forecaster looks the same in every plot.
_PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def render_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No "Software" metadata: identical inputs give identical bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def message_png(text: str, size: tuple[float, float] = (6.0, 1.5)) -> bytes:
    fig = Figure(figsize=size)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="dimgray")
    return render_png(fig)


def _present(col: str) -> pl.Expr:
    return pl.col(col).is_not_null() & pl.col(col).cast(pl.Float64).is_not_nan()


def _usable(frame: pl.DataFrame, forecasters: Sequence[str]) -> list[str]:
    """The forecasters with a column holding at least one value, in the given order."""
    cols = [f for f in dict.fromkeys(forecasters) if f in frame.columns]
    if not cols or frame.is_empty():
        return []
    counts = frame.select(_present(c).sum().alias(c) for c in cols).row(0, named=True)
    return [c for c in cols if counts[c] > 0]


def _colour(forecasters: Sequence[str], name: str) -> str:
    return _PALETTE[list(forecasters).index(name) % len(_PALETTE)]


def representative_series(frame: pl.DataFrame, n: int = 4) -> list[tuple[str, str]]:
    """Up to `n` (store_id, item_id) worth a look, deterministically and in this order: the
    top seller, the most zero-heavy series (the slowest seller when none has zeros), the
    median seller, then series spread evenly over the sales ranking."""
    if n < 1 or frame.is_empty() or not {*KEYS, "date", ACTUAL} <= set(frame.columns):
        return []
    # Overlapping origins repeat a date: count each actual once.
    stats = (frame.unique([*KEYS, "date"], keep="first", maintain_order=True)
             .group_by(KEYS)
             .agg(total=pl.col(ACTUAL).cast(pl.Float64).fill_nan(None).sum(),
                  zeros=(pl.col(ACTUAL) == 0).mean().fill_null(0.0)))
    ranked = [tuple(r) for r in stats.sort(["total", *KEYS], descending=[True, False, False])
              .select(KEYS).rows()]
    zero_heavy = stats.sort(["zeros", "total", *KEYS], descending=[True, False, False, False])
    picks = [ranked[0], tuple(zero_heavy.row(0)[:2]), ranked[len(ranked) // 2]]
    rest = [s for s in ranked if s not in picks]
    if rest and n > 3:
        spread = np.linspace(0, len(rest) - 1, num=min(n - 3, len(rest))).round().astype(int)
        picks += [rest[i] for i in dict.fromkeys(spread.tolist())]
    return list(dict.fromkeys(picks))[:n]


def period_unit(period_days: int) -> str:
    """The period a count is per: "day", "week", or "7-day period" style for others."""
    return {1: "day", 7: "week"}.get(period_days, f"{period_days}-day period")


def forecast_vs_actual_png(frame: pl.DataFrame, forecasters: Sequence[str],
                           series: Sequence[tuple[str, str]], period_days: int = 1) -> bytes:
    """`forecast_vs_actual_figure` as a PNG, or an image that says why there is nothing."""
    if not series or frame.is_empty() or not {*KEYS, "date", ACTUAL} <= set(frame.columns):
        return message_png("no backtest rows to plot")
    return render_png(forecast_vs_actual_figure(frame, forecasters, series, period_days))


def forecast_vs_actual_figure(frame: pl.DataFrame, forecasters: Sequence[str],
                              series: Sequence[tuple[str, str]], period_days: int = 1
                              ) -> Figure:
    """One panel per series (at least one): the actuals as a black line, each forecaster's
    forecast as one segment per origin (the windows tile), gaps where values are null. A
    dashed vertical line marks each backtest origin (the last day the forecasts knew): without
    it a reader cannot tell where one refit's window ends and the next begins."""
    usable = _usable(frame, forecasters)
    # every panel marks every origin, so the panels line up with each other
    origins = (frame.get_column("origin").drop_nulls().unique().sort().to_list()
               if "origin" in frame.columns else [])
    unit = period_unit(period_days)
    ncols = 1 if len(series) == 1 else 2
    nrows = math.ceil(len(series) / ncols)
    fig = Figure(figsize=(8 if ncols == 1 else 10, 1 + 2.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, object] = {}
    for ax, (store, item) in zip(axes, series, strict=False):
        rows = frame.filter((pl.col("store_id") == store) & (pl.col("item_id") == item))
        ax.set_title(f"{store} / {item}", fontsize=9)
        if rows.is_empty():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        actual = (rows.unique("date", keep="first").sort("date")
                  .select("date", pl.col(ACTUAL).cast(pl.Float64).fill_null(np.nan)))
        # Drawn on top, with dots so an actual isolated between nulls still shows.
        (handles["actual"],) = ax.plot(actual["date"].to_numpy(), actual[ACTUAL].to_numpy(),
                                       color="black", lw=1.2, marker=".", ms=3, zorder=3)
        origin_groups = (rows.partition_by("origin", maintain_order=True)
                         if "origin" in rows.columns else [rows])
        for name in usable:
            for window in origin_groups:
                w = window.sort("date")
                y = w[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
                (handles[name],) = ax.plot(w["date"].to_numpy(), y, lw=1,
                                           color=_colour(forecasters, name))
        for origin in origins:
            ax.axvline(origin, color="dimgray", ls="--", lw=0.9, zorder=1)
        if origins:
            handles["backtest origin"] = Line2D([], [], color="dimgray", ls="--", lw=0.9)
        locator = AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_xlabel("date", fontsize=8)
        ax.set_ylabel(f"units sold per {unit}", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in axes[len(series):]:
        ax.set_visible(False)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside upper center",
                   ncols=min(len(handles), 5), fontsize=8, frameon=False)
    return fig


def error_by_horizon_png(frame: pl.DataFrame, forecasters: Sequence[str],
                         period_days: int) -> bytes:
    """WAPE per horizon step, one line per forecaster; the legend gives the pooled WAPE."""
    if frame.is_empty() or not {"horizon", ACTUAL} <= set(frame.columns):
        return message_png("no backtest rows to score")
    usable = _usable(frame, forecasters)
    if not usable:
        return message_png("no forecasts to score")
    frame = frame.filter(pl.col("horizon").is_not_null())
    by_h = metric_table(frame, ACTUAL, usable, by=["horizon"])
    overall = dict(metric_table(frame, ACTUAL, usable).select("forecaster", "wape").rows())
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for name in usable:
        line = by_h.filter(pl.col("forecaster") == name)
        ax.plot(line["horizon"].to_numpy(), line["wape"].to_numpy(), marker="o", ms=3,
                color=_colour(forecasters, name), label=f"{name} ({overall[name]:.1%})")
    ax.set_xlabel(f"{period_unit(period_days)}s ahead of the origin")
    ax.set_ylabel("WAPE (sum |error| / sum actual)")
    ax.set_title("Backtest WAPE by horizon", fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return render_png(fig)


def feature_importance_png(importance: dict[str, float], top: int = 20) -> bytes:
    """Horizontal bars of the `top` features by gain (`Booster.get_score(importance_type=
    "gain")`), the largest on top."""
    items = sorted(((float(v), k) for k, v in importance.items() if math.isfinite(float(v))),
                   key=lambda vk: (-vk[0], vk[1]))[:max(top, 0)]
    if not items:
        return message_png("no feature importance")
    gains, names = zip(*reversed(items), strict=True)
    fig = Figure(figsize=(8, 1 + 0.22 * len(items)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([n if len(n) <= 40 else n[:39] + "…" for n in names], gains, color="tab:blue")
    ax.set_xlabel("gain (mean loss reduction per split using the feature)")
    ax.set_title(f"Top {len(items)} features by gain", fontsize=10)
    ax.tick_params(labelsize=8)
    return render_png(fig)


# file stem (the MLflow artifact's name) → the report's caption
CAPTIONS = {
    "forecast_vs_actual": "Forecast vs actual for representative series (the top seller, the "
                          "most zero-heavy, the median, then a spread); dashed lines: the "
                          "backtest origins, the last day each refit knew",
    "error_by_horizon": "Backtest WAPE by periods ahead of the origin",
    "feature_importance": "The challenger's features by gain",
}


def report_images(backtest: pl.DataFrame, forecasters: Sequence[str], period_days: int,
                  importance: dict[str, float]) -> dict[str, bytes]:
    """The report's plots by file stem (`CAPTIONS`' keys); `importance` is the challenger's
    `Booster.get_score(importance_type="gain")`, empty for a baseline."""
    series = representative_series(backtest)
    return {
        "forecast_vs_actual": forecast_vs_actual_png(backtest, forecasters, series, period_days),
        "error_by_horizon": error_by_horizon_png(backtest, forecasters, period_days),
        "feature_importance": feature_importance_png(importance),
    }
