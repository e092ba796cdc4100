"""Forecast metrics (ml_assets.evaluation.metrics) against hand-computed values.

The arithmetic is written next to each expected value. Null/NaN pairs are skipped, undefined
ratios are nan, and the grouped table equals the scalar functions applied group by group.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ml_assets.evaluation.metrics import (
    bias,
    horizon_bucket,
    mae,
    mase,
    metric_table,
    mlflow_metrics,
    mlflow_name,
    rmse,
    rmspe_nonzero,
    wape,
)

COLUMNS = ["forecaster", "wape", "mae", "rmse", "bias", "mase", "rmspe", "n"]

# actual  2  0  4  null      forecast 3  1  1  5  → pairs (2, 3), (0, 1), (4, 1)
# errors f - a = 1, 1, -3;  |e| = 1, 1, 3 (sum 5);  e^2 = 1, 1, 9 (sum 11);  sum(a) = 6
ACTUAL = [2.0, 0.0, 4.0, None]
FORECAST = [3.0, 1.0, 1.0, 5.0]
EXPECTED = {
    "wape": 5 / 6,
    "mae": 5 / 3,
    "rmse": math.sqrt(11 / 3),
    "bias": -1 / 6,  # (1 + 1 - 3) / 6: under-forecast overall
    # a != 0 only: (3 - 2) / 2 = 0.5 and (1 - 4) / 4 = -0.75 → sqrt((0.25 + 0.5625) / 2)
    "rmspe": math.sqrt(0.40625),
    "mase": (5 / 3) / 2.0,  # MAE / scale 2
}


def scalar(name: str, a, f, scale: float = 2.0) -> float:
    if name == "mase":
        return mase(a, f, scale)
    fn = {"wape": wape, "mae": mae, "rmse": rmse, "bias": bias, "rmspe": rmspe_nonzero}[name]
    return fn(a, f)


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("kind", ["polars", "numpy"])
def test_metrics_hand_computed_skip_missing_pairs(name: str, kind: str) -> None:
    if kind == "polars":
        a, f = pl.Series(ACTUAL), pl.Series(FORECAST)
    else:  # NaN stands for missing in numpy
        a, f = np.array(ACTUAL, dtype=float), np.array(FORECAST)
    assert scalar(name, a, f) == pytest.approx(EXPECTED[name])


def test_missing_forecast_is_skipped_too() -> None:
    # pairs (2, 3), (4, 1); the (0, null) pair is skipped: |e| = 1, 3 → MAE 2, WAPE 4/6
    a, f = pl.Series([2.0, 0.0, 4.0]), pl.Series([3.0, None, 1.0])
    assert mae(a, f) == pytest.approx(2.0)
    assert wape(a, f) == pytest.approx(4 / 6)


def test_bias_sign_positive_means_over_forecast() -> None:
    assert bias([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.5)  # (1 + 1) / 4
    assert bias([1.0, 3.0], [0.0, 2.0]) == pytest.approx(-0.5)  # (-1 - 1) / 4


def test_zero_sum_actuals_make_ratios_nan_not_zero() -> None:
    a, f = [0.0, 0.0], [1.0, 0.0]  # |e| = 1, 0
    assert math.isnan(wape(a, f))  # 1 / 0
    assert math.isnan(bias(a, f))  # 1 / 0
    assert math.isnan(rmspe_nonzero(a, f))  # no a != 0
    assert mae(a, f) == pytest.approx(0.5)
    assert rmse(a, f) == pytest.approx(math.sqrt(0.5))
    assert wape([0.0, 0.0], [0.0, 0.0]) != 0.0  # a perfect zero forecast is nan, not 0


def test_no_usable_pair_gives_nan_everywhere() -> None:
    a, f = pl.Series([1.0, None]), pl.Series([None, 2.0])
    for name in EXPECTED:
        assert math.isnan(scalar(name, a, f)), name


def test_mase_scale_per_row_and_undefined_scales() -> None:
    # |e| = 1, 1, 2 with scales 2, 0, 4: the scale-0 row is left out → mean(1/2, 2/4) = 0.5
    assert mase([1.0, 2.0, 3.0], [2.0, 3.0, 5.0], [2.0, 0.0, 4.0]) == pytest.approx(0.5)
    assert mase([1.0, 2.0], [2.0, 4.0], np.array([np.nan, 3.0])) == pytest.approx(2 / 3)
    assert math.isnan(mase([1.0], [2.0], 0.0))
    assert mase([1.0, 5.0], [2.0, 2.0], 4.0) == pytest.approx(0.5)  # MAE 2 / 4


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="length"):
        mae([1.0, 2.0], [1.0])


# --- metric_table ---------------------------------------------------------------------------


def test_metric_table_overall_hand_computed() -> None:
    frame = pl.DataFrame({"units_sold": ACTUAL, "model": FORECAST,
                          "naive": [2.0, 2.0, 2.0, 2.0]})
    table = metric_table(frame, forecasts=["model", "naive"], mase_scale=2.0)
    assert table.columns == COLUMNS
    assert table.get_column("forecaster").to_list() == ["model", "naive"]
    model = table.row(0, named=True)
    for name, value in EXPECTED.items():
        assert model[name] == pytest.approx(value), name
    assert model["n"] == 3
    # naive: pairs (2, 2), (0, 2), (4, 2): e = 0, 2, -2 → WAPE 4/6, bias 0, RMSE sqrt(8/3),
    # RMSPE over a != 0: 0 and -0.5 → sqrt(0.25 / 2)
    naive = table.row(1, named=True)
    assert (naive["wape"], naive["bias"]) == (pytest.approx(4 / 6), pytest.approx(0.0))
    assert naive["rmse"] == pytest.approx(math.sqrt(8 / 3))
    assert naive["rmspe"] == pytest.approx(math.sqrt(0.125))


def random_frame(seed: int = 0, n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    actual = rng.poisson(2.0, n).astype(float)
    actual[rng.random(n) < 0.1] = np.nan
    model = actual + rng.normal(0, 1.5, n)
    model[rng.random(n) < 0.1] = np.nan
    frame = pl.DataFrame({
        "store_id": rng.choice(["s1", "s2", "s3"], n),
        "category": rng.choice(["dairy", "bakery"], n),
        "horizon": rng.integers(1, 29, n),
        "units_sold": actual,
        "model": model,
        "seasonal_naive": rng.poisson(2.0, n).astype(float),
    }).with_columns(pl.col("units_sold", "model").fill_nan(None))
    # a group whose actuals are all zero: its WAPE, bias and RMSPE are nan
    return frame.with_columns(
        pl.when(pl.col("store_id") == "s3").then(0.0).otherwise(pl.col("units_sold"))
        .alias("units_sold"))


@pytest.mark.parametrize("by", [["store_id"], ["store_id", "category"], ["bucket"]])
def test_grouped_table_equals_per_group_computation(by: list[str]) -> None:
    frame = random_frame().with_columns(bucket=horizon_bucket(pl.col("horizon"), 1))
    forecasts = ["model", "seasonal_naive"]
    table = metric_table(frame, forecasts=forecasts, by=by, mase_scale=1.7)
    assert table.columns == [*by, *COLUMNS]
    groups = frame.select(by).unique()
    assert table.height == groups.height * len(forecasts)
    for row in table.iter_rows(named=True):
        part = frame.filter(pl.all_horizontal(pl.col(c) == row[c] for c in by))
        a, f = part.get_column("units_sold"), part.get_column(row["forecaster"])
        for name in ["wape", "mae", "rmse", "bias", "rmspe", "mase"]:
            expected = scalar(name, a, f, scale=1.7)
            assert row[name] == pytest.approx(expected, nan_ok=True), (row, name)
        assert row["n"] == (a.is_not_null() & f.is_not_null()).sum()
    if "store_id" in by:  # s3 sells nothing: WAPE is nan, not 0 or inf
        assert table.filter(pl.col("store_id") == "s3").get_column("wape").is_nan().all()


def test_table_sorted_by_groups_then_forecaster_order() -> None:
    frame = random_frame().with_columns(bucket=horizon_bucket(pl.col("horizon"), 1))
    table = metric_table(frame, forecasts=["seasonal_naive", "model"], by=["bucket"])
    assert table.get_column("bucket").cast(pl.Utf8).to_list() == [
        "1-7", "1-7", "8-14", "8-14", "15-28", "15-28"]  # bucket order, not alphabetical
    assert table.get_column("forecaster").to_list() == ["seasonal_naive", "model"] * 3
    assert table.get_column("mase").is_nan().all()  # no scale given


def test_same_rows_compares_forecasters_on_identical_rows() -> None:
    frame = pl.DataFrame({"units_sold": [1.0, 2.0, 4.0], "model": [1.0, 2.0, 0.0],
                          "naive": [2.0, None, 4.0]})
    own = metric_table(frame, forecasts=["model", "naive"])
    same = metric_table(frame, forecasts=["model", "naive"], same_rows=True)
    assert own.get_column("n").to_list() == [3, 2]
    assert same.get_column("n").to_list() == [2, 2]
    # model on rows 1 and 3: |e| = 0, 4 → MAE 2 (own rows: 4 / 3)
    assert own.get_column("mae")[0] == pytest.approx(4 / 3)
    assert same.get_column("mae")[0] == pytest.approx(2.0)


def test_mase_scale_per_series_from_a_frame_or_a_column() -> None:
    frame = pl.DataFrame({"store_id": ["a", "a", "b", "c"], "item_id": [1, 1, 1, 1],
                          "units_sold": [1.0, 3.0, 2.0, 5.0], "model": [2.0, 1.0, 2.0, 1.0]})
    scales = pl.DataFrame({"store_id": ["a", "b", "c"], "item_id": [1, 1, 1],
                           "mase_scale": [2.0, 1.0, 0.0]})
    # |e| = 1, 2 (scale 2), 0 (scale 1), 4 (scale 0: left out) → mean(0.5, 1, 0) = 0.5
    by_frame = metric_table(frame, forecasts=["model"], mase_scale=scales)
    assert by_frame.get_column("mase")[0] == pytest.approx(0.5)
    by_column = metric_table(frame.join(scales, on=["store_id", "item_id"]),
                             forecasts=["model"], mase_scale="mase_scale")
    assert by_column.get_column("mase")[0] == pytest.approx(0.5)
    assert by_frame.get_column("mae")[0] == pytest.approx(7 / 4)  # every row still in MAE


def test_group_without_usable_rows_is_reported_with_n_zero() -> None:
    frame = pl.DataFrame({"g": ["x", "y", "z"], "units_sold": [1.0, 2.0, 3.0],
                          "model": [1.0, None, float("nan")]})  # NaN counts as missing too
    table = metric_table(frame, forecasts=["model"], by=["g"])
    assert table.get_column("n").to_list() == [1, 0, 0]
    assert table.get_column("mae").is_nan().to_list() == [False, True, True]


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="xgb"):
        metric_table(pl.DataFrame({"units_sold": [1.0]}), forecasts=["xgb"])


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("period_days", "expected"), [
    (1, [None, "1-7", "1-7", "8-14", "8-14", "15-28", "15-28", "29+"]),
    (7, [None, "1-2", "1-2", "3-4", "5-8", "5-8", "9+", "9+"]),
])
def test_horizon_buckets(period_days: int, expected: list[str | None]) -> None:
    h = [0, 1, 2, 8, 14, 15, 28, 29] if period_days == 1 else [0, 1, 2, 4, 5, 8, 9, 52]
    out = pl.DataFrame({"h": h}).select(horizon_bucket(pl.col("h"), period_days))
    assert out.to_series().cast(pl.Utf8).to_list() == expected


def test_horizon_bucket_rejects_other_periods() -> None:
    with pytest.raises(ValueError, match="period_days"):
        horizon_bucket(pl.col("h"), 3)


def test_mlflow_names_spell_out_plus_and_drop_what_mlflow_refuses() -> None:
    assert mlflow_name("backtest_wape_challenger_h29+") == "backtest_wape_challenger_h29plus"
    assert mlflow_name("wape_h1-7") == "wape_h1-7"
    assert mlflow_name("a(b)=c,d") == "a_b__c_d"


def test_mlflow_metrics_every_metric_overall_and_by_bucket_logged_by_mlflow(tmp_path) -> None:
    """Every score of every forecaster, overall and per bucket, is a name MLflow accepts: the
    names go through a real MLflow tracking store (sqlite) and come back with their values."""
    mlflow = pytest.importorskip("mlflow")
    rng = np.random.default_rng(1)
    frame = pl.DataFrame({"h": rng.integers(1, 35, 300), "units_sold": rng.poisson(5, 300)
                          .astype(float), "model": rng.poisson(5, 300).astype(float),
                          "seasonal_naive": rng.poisson(5, 300).astype(float)}
                         ).with_columns(horizon_bucket=horizon_bucket(pl.col("h"), 1))
    forecasts = ["model", "seasonal_naive"]
    overall = metric_table(frame, forecasts=forecasts, mase_scale=2.0)
    by_bucket = metric_table(frame, forecasts=forecasts, by=["horizon_bucket"], mase_scale=2.0)
    metrics = mlflow_metrics(overall, by_bucket)
    scores = ["wape", "mae", "rmse", "bias", "mase", "rmspe"]
    buckets = ["1-7", "8-14", "15-28", "29plus"]
    assert set(metrics) == {f"backtest_{m}_{f}{b}" for m in scores for f in forecasts
                            for b in ["", *(f"_h{x}" for x in buckets)]}
    assert metrics["backtest_wape_model"] == overall.row(0, named=True)["wape"]
    assert metrics["backtest_rmse_seasonal_naive_h29plus"] == by_bucket.filter(
        (pl.col("forecaster") == "seasonal_naive") & (pl.col("horizon_bucket") == "29+")
    ).item(0, "rmse")

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("names", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment)
    client.log_batch(run.info.run_id, metrics=[
        mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()])
    assert client.get_run(run.info.run_id).data.metrics == pytest.approx(metrics)


def test_mlflow_metrics_keep_undefined_values_as_nan() -> None:
    frame = pl.DataFrame({"units_sold": [0.0, 0.0], "model": [1.0, 2.0]})
    metrics = mlflow_metrics(metric_table(frame, forecasts=["model"]))
    assert math.isnan(metrics["backtest_wape_model"]) and metrics["backtest_mae_model"] == 1.5
    assert "backtest_n_model" not in metrics  # a row count is not a score
