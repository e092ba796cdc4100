"""The `feature_drift` asset: each day's window of features against a like-for-like reference.

For each partition day d, the window is the week ending on d (4 weeks for weekly data) of
`silver/features`, and the reference is chosen by `seasonal_reference`: the same weeks last
year when the history reaches back that far, else the weeks just before, weekday-matched. Every
model feature is compared (calendar features aside, see `drift.CALENDAR_FEATURES`, and the
planned price and promotion inputs, see `PLANNED`), plus the
target `units_sold` (a demand shift shows in it at once, in lagged features only a horizon
later) and the champion's prediction on both sides.
"""

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.features.assets import FEATURES_TABLE, feature_spec
from ml_assets.features.recent import with_recent
from ml_assets.features.transforms import SERIES, FeatureSpec
from ml_assets.metadata import markdown_images, markdown_table
from ml_assets.monitoring.drift import (
    DriftThresholds,
    drift_report,
    monitored_columns,
    seasonal_reference,
)
from ml_assets.monitoring.drift_plots import drift_heatmap_png
from ml_assets.monitoring.policy import DEFAULT_POLICY, load_policy
from ml_assets.partitions import first_day, window_dates
from ml_assets.training.dataset import TARGET, model_columns
from ml_assets.training.registry import RegisteredModel, load_alias
from resources.delta import DeltaStore
from resources.platform import PlatformSettings

DRIFT_TABLE = "monitoring/feature_drift"
PREDICTION = "prediction"
WINDOWS_REPORTED = 30  # recent windows in the metadata the retrain sensor reads
HEATMAP_WINDOWS = 28
# Drift watches recent data: a backfill of the whole history computes its last windows only.
MAX_WINDOWS_PER_RUN = 35
REFERENCE_REACH_DAYS = 364 + 5 * 7  # last year's weeks, widened, and the weeks before
# Price and promotion are planned by the retailer, known in advance, and their week-to-week mix
# follows the promotion calendar: a promotion week is not drift. They stay out of the alarm.
PLANNED = ("price", "discount", "on_promo", "promo_")


def window_of(day: dt.date, period_days: int) -> tuple[dt.date, dt.date]:
    """[start, end) of the window that ends on `day`: a week of days, or four weeks."""
    end = day + dt.timedelta(days=period_days)
    return end - dt.timedelta(days=7 * (1 if period_days == 1 else 4)), end


def _with_prediction(frame: pl.DataFrame, model: RegisteredModel | None,
                     spec: FeatureSpec) -> pl.DataFrame:
    # A baseline champion forecasts from origin-relative columns the feature rows do not have
    if model is None or model.booster is None or frame.is_empty():
        return frame
    # the model's origin-relative inputs, as for training rows (the rows hold their sales)
    rows = with_recent(frame, frame, spec)
    return frame.with_columns(pl.Series(PREDICTION, model.predict(rows), dtype=pl.Float64))


def drift_windows(delta: DeltaStore, days: list[dt.date], spec: FeatureSpec, earliest: dt.date,
                  model: RegisteredModel | None, thresholds: DriftThresholds) -> pl.DataFrame:
    """One row per (window end, monitored column) for each of `days`."""
    period_days = spec.period_days
    first, last = window_of(min(days), period_days)[0], window_of(max(days), period_days)[1]
    # one read for every window: theirs, and the year and a few weeks a reference reaches back
    rows = delta.scan(FEATURES_TABLE).filter(
        pl.col("date") >= first - dt.timedelta(days=REFERENCE_REACH_DAYS),
        pl.col("date") < last, pl.col(TARGET).is_not_null(),
    ).collect().sort("date", maintain_order=True)
    columns = model_columns(rows)
    numeric, categorical = monitored_columns(
        [c for c in columns.numeric if not c.startswith(PLANNED)], columns.categorical)
    rows = _with_prediction(rows, model, spec)
    dates = rows.get_column("date")
    tables = []
    for day in days:
        start, end = window_of(day, period_days)
        # sorted by date: a window and its past are slices, not copies of the wide frame
        lo, hi = dates.search_sorted(start, "left"), dates.search_sorted(end, "left")
        current = rows.slice(lo, hi - lo)
        if current.is_empty():
            continue
        # like for like: the same series on both sides, so launches and retirements (a
        # changing assortment) are not mistaken for drift
        reference, rule = seasonal_reference(rows.slice(0, lo), start, end, period_days,
                                             earliest=earliest,
                                             series=current.select(SERIES).unique())
        # a yearly lag is empty in a reference from the first year: nothing to compare with
        comparable = [c for c in numeric
                      if reference.get_column(c).null_count() <= 0.5 * reference.height]
        report = drift_report(
            current, reference, [*comparable, TARGET], categorical, thresholds,
            prediction=PREDICTION if PREDICTION in rows.columns else None)
        tables.append(report.table.with_columns(
            window_end=pl.lit(day, pl.Date), window_start=pl.lit(start, pl.Date),
            reference_rule=pl.lit(rule.rule), reference_start=pl.lit(rule.start, pl.Date),
            reference_end=pl.lit(rule.end, pl.Date),
            drift_share=pl.lit(report.summary.share_drifted),
            alarm=pl.lit(report.summary.alarm)))
    return pl.concat(tables) if tables else pl.DataFrame()


def recent_windows(table: pl.DataFrame, n: int) -> list[dict]:
    """The last `n` windows as the retrain sensor reads them: end, drift share, and every
    column's PSI (the policy picks its key features)."""
    ends = table.get_column("window_end").unique().sort().tail(n).to_list()
    out = []
    for end in ends:
        rows = table.filter(pl.col("window_end") == end)
        out.append({"end": end.isoformat(), "drift_share": float(rows["drift_share"][0]),
                    "key_psi": {r["feature"]: r["psi"] for r in rows.iter_rows(named=True)
                                if r["psi"] is not None}})
    return out


def build_drift_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="feature_drift", group_name="monitoring", partitions_def=partitions,
        deps=["features", "champion"], backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"delta", "polars"},
        # nothing to compare (no feature rows in the windows yet): no materialization, so the
        # partitions stay unmaterialized instead of green with a note
        output_required=False,
        description="Drift of each day's window of features (plus the target and the "
                    "champion's prediction) against a seasonality-aware reference: the same "
                    "weeks last year where history allows, else the weeks before, weekday-"
                    "matched. PSI, KS and normalized Wasserstein per numeric feature, Jensen-"
                    f"Shannon per categorical one. Delta table `{DRIFT_TABLE}`, by window end.")
    def feature_drift(context: dg.AssetExecutionContext, platform: PlatformSettings,
                      delta: DeltaStore) -> Iterator[dg.MaterializeResult]:
        settings = platform.get()
        spec = feature_spec(settings.dataset)
        start, end = window_dates(context)
        step = dt.timedelta(days=spec.period_days)
        days = [start + i * step for i in range((end - start) // step)]
        skipped, days = days[:-MAX_WINDOWS_PER_RUN], days[-MAX_WINDOWS_PER_RUN:]
        # rolling features are complete from here on (yearly lags are handled per window)
        earliest = first_day(settings) + (spec.horizon + spec.windows[-1]) * step
        model = load_alias(settings.mlflow_tracking_uri, "champion")
        policy = load_policy(settings.retrain_policy or DEFAULT_POLICY)
        thresholds = DriftThresholds(**dict(policy.statistics), share=policy.drift_share)
        new = drift_windows(delta, days, spec, earliest, model, thresholds)
        if new.is_empty():
            context.log.warning(f"feature_drift computed nothing: no feature rows from "
                                f"{earliest} on in {days[0]} .. {days[-1]}; not materialized")
            return
        ends = ", ".join(f"'{d}'" for d in new.get_column("window_end").unique().to_list())
        predicate = f"window_end IN ({ends})" if delta.exists(DRIFT_TABLE) else None
        version = delta.overwrite(DRIFT_TABLE, new, predicate=predicate,
                                  partition_by=["window_end"])
        history = delta.scan(DRIFT_TABLE).filter(
            pl.col("window_end") > new.get_column("window_end").max()
            - dt.timedelta(days=(WINDOWS_REPORTED + HEATMAP_WINDOWS) * spec.period_days)
        ).collect()
        latest = new.filter(pl.col("window_end") == pl.col("window_end").max())
        top = latest.filter("drifted").sort("score", descending=True).head(10)
        yield dg.MaterializeResult(metadata={
            "window_end": str(latest["window_end"][0]),
            "drift_share": round(float(latest["drift_share"][0]), 4),
            "alarm": bool(latest["alarm"][0]),
            "reference_rule": str(latest["reference_rule"][0]),
            "windows_computed": new.get_column("window_end").n_unique(),
            "windows_skipped": len(skipped),
            "champion_version": model.version if model else "none",
            "delta_version": version,
            "windows": json.dumps(recent_windows(history, WINDOWS_REPORTED)),
            "top_drifted": markdown_table(
                [(r["feature"], r["kind"], _r(r["psi"]), _r(r["ks"]), _r(r["wasserstein_norm"]),
                  _r(r["js"])) for r in top.iter_rows(named=True)],
                ("feature", "kind", "PSI", "KS", "W1/std", "JS")),
            "heatmap": dg.MetadataValue.md(markdown_images(
                {"drift score by feature and day (>= 1: drifted)": drift_heatmap_png(
                    history, HEATMAP_WINDOWS)})),
        })

    return [feature_drift]


def _r(x: float | None) -> float | str:
    return "" if x is None else round(x, 3)
