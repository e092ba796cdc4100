"""Drift statistics (ml_assets.monitoring.drift) against scipy on known distributions, and the
edge cases a monitoring job meets: nulls, constant columns, unseen levels, tiny samples."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from ml_assets.monitoring.drift import (
    KS_GRID,
    SCHEMA,
    DriftThresholds,
    categorical_drift,
    drift_report,
    js_distance,
    monitored_columns,
    numeric_drift,
)

DEFAULT = DriftThresholds()


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- numeric: against scipy ------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(7, 5), (50, 70), (1_000, 1_000), (3_000, 5_000),
                                      (20_000, 20_000)])
def test_ks_and_wasserstein_exact_on_small_and_equal_samples(n: int, m: int) -> None:
    cur, ref = rng(n).normal(0.3, 1.4, n), rng(m + 1).normal(0, 1, m)
    stats = numeric_drift(cur, ref)
    if max(n, m) <= KS_GRID:
        assert stats["ks"] == pytest.approx(ks_2samp(cur, ref).statistic, abs=1e-12)
    assert stats["wasserstein_norm"] == pytest.approx(
        wasserstein_distance(cur, ref) / ref.std(), rel=1e-9)


def test_ks_and_wasserstein_within_stated_bounds_on_large_samples() -> None:
    """Large unequal samples: KS on a grid (at most 1/(KS_GRID-1) + 1/n low, never high) and W1
    by the midpoint rule (within range / min(n, m))."""
    cur, ref = rng(1).lognormal(0.1, 1.0, 300_000), rng(2).lognormal(0.0, 1.0, 250_000)
    stats = numeric_drift(cur, ref)
    exact_ks = ks_2samp(cur, ref).statistic
    assert exact_ks - 1 / (KS_GRID - 1) - 1 / 250_000 <= stats["ks"] <= exact_ks + 1e-12
    w1 = stats["wasserstein_norm"] * ref.std()
    bound = (cur.max() - cur.min()) / 250_000
    assert abs(w1 - wasserstein_distance(cur, ref)) <= bound
    assert w1 == pytest.approx(wasserstein_distance(cur, ref), rel=1e-3)  # far inside, in practice


def test_psi_by_hand_on_a_binary_column() -> None:
    """0/1 with ties: the bins are {0} and (0, 1], so 80/20 against 50/50 gives
    0.3 ln(0.8/0.5) + 0.3 ln(0.5/0.2)."""
    ref = np.array([0.0] * 80 + [1.0] * 20)
    cur = np.array([0.0] * 50 + [1.0] * 50)
    expected = (0.5 - 0.8) * np.log(0.5 / 0.8) + (0.5 - 0.2) * np.log(0.5 / 0.2)
    assert numeric_drift(cur, ref)["psi"] == pytest.approx(expected, rel=1e-12)


def test_same_distribution_is_not_drift() -> None:
    ref = rng(3).gamma(2.0, 3.0, 50_000)
    same = numeric_drift(ref, ref)
    assert same["psi"] == same["ks"] == same["wasserstein_norm"] == 0.0
    fresh = numeric_drift(rng(4).gamma(2.0, 3.0, 50_000), ref)
    assert fresh["psi"] < 0.01 and fresh["ks"] < 0.02 and fresh["wasserstein_norm"] < 0.02


@pytest.mark.parametrize(("label", "loc", "scale", "stat"), [
    ("mean shift of half a sd", 0.5, 1.0, "wasserstein_norm"),
    ("scale x1.6", 0.0, 1.6, "psi"),
])
def test_shift_and_scale_change_drift(label: str, loc: float, scale: float, stat: str) -> None:
    ref = pl.DataFrame({"x": rng(5).normal(0, 1, 20_000)})
    cur = pl.DataFrame({"x": rng(6).normal(loc, scale, 20_000)})
    report = drift_report(cur, ref, ["x"], [])
    row = report.table.row(0, named=True)
    assert row["drifted"], label
    assert row[stat] >= {"wasserstein_norm": DEFAULT.wasserstein, "psi": DEFAULT.psi}[stat]
    assert report.summary.alarm and report.summary.top == ("x",)


# --- numeric: edge cases -----------------------------------------------------------------------


def test_constant_columns() -> None:
    five = np.full(500, 5.0)
    assert numeric_drift(five, five) == pytest.approx(
        {"n_current": 500, "n_reference": 500, "null_share_current": 0.0,
         "null_share_reference": 0.0, "psi": 0.0, "ks": 0.0, "wasserstein_norm": 0.0})
    for other in (4.0, 6.0):  # below and above the reference's only value: both caught
        moved = numeric_drift(np.full(500, other), five)
        assert moved["psi"] > 5 and moved["ks"] == 1.0
        assert moved["wasserstein_norm"] == 1.0  # a zero std divides by 1: feature units


def test_nulls_and_nan_are_a_bin_of_their_own() -> None:
    ref = rng(7).normal(0, 1, 10_000)
    cur = pl.Series(rng(8).normal(0, 1, 10_000)).scatter(range(3_000), None)
    stats = numeric_drift(cur, ref)
    assert stats["null_share_current"] == 0.3 and stats["null_share_reference"] == 0.0
    assert stats["psi"] > DEFAULT.psi  # 30% missing where there were none
    assert stats["ks"] < 0.05 and stats["wasserstein_norm"] < 0.05  # the values did not move
    with_nan = cur.to_numpy().copy()  # NaN counts as missing, like null
    assert numeric_drift(with_nan, ref) == pytest.approx(stats)


def test_all_missing_and_empty_do_not_crash() -> None:
    ref = rng(9).normal(0, 1, 1_000)
    gone = numeric_drift(pl.Series([None] * 200, dtype=pl.Float64), ref)
    assert np.isnan(gone["ks"]) and np.isnan(gone["wasserstein_norm"]) and gone["psi"] > 5
    both = numeric_drift(np.full(10, np.nan), np.full(10, np.nan))
    assert both["psi"] == 0.0
    empty = numeric_drift(np.empty(0), ref)
    assert empty["n_current"] == 0 and np.isnan(empty["ks"])


def test_tiny_samples_are_reported_not_judged() -> None:
    cur, ref = pl.DataFrame({"x": [10.0, 11.0]}), pl.DataFrame({"x": [0.0]})
    row = drift_report(cur, ref, ["x"], []).table.row(0, named=True)
    assert row["ks"] == 1.0 and row["score"] > 1 and not row["drifted"]  # below min_rows
    loose = DriftThresholds(min_rows=1)
    assert drift_report(cur, ref, ["x"], [], loose).table.get_column("drifted").item()


# --- categorical -------------------------------------------------------------------------------


def test_js_against_scipy_with_unseen_levels_and_nulls() -> None:
    cur = pl.Series(rng(10).choice(["a", "b", "c", "new"], 5_000, p=[0.4, 0.3, 0.2, 0.1]))
    cur = cur.scatter(range(250), None)
    ref = pl.Series(rng(11).choice(["a", "b", "c", "old"], 4_000, p=[0.3, 0.3, 0.3, 0.1]))
    stats = categorical_drift(cur, ref)
    levels = ["a", "b", "c", "new", "old", None]
    p, q = (np.array([s.to_list().count(v) for v in levels], float) for s in (cur, ref))
    assert stats["js"] == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert stats["null_share_current"] == 0.05 and stats["null_share_reference"] == 0.0
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_categorical_mix_change_drifts_and_identical_does_not() -> None:
    ref = pl.DataFrame({"k": rng(12).choice(["x", "y", "z"], 10_000, p=[0.5, 0.3, 0.2])})
    same = pl.DataFrame({"k": rng(13).choice(["x", "y", "z"], 10_000, p=[0.5, 0.3, 0.2])})
    moved = pl.DataFrame({"k": rng(14).choice(["x", "y", "z"], 10_000, p=[0.2, 0.3, 0.5])})
    calm = drift_report(same, ref, [], ["k"]).table.row(0, named=True)
    assert calm["js"] < 0.02 and not calm["drifted"]
    row = drift_report(moved, ref, [], ["k"]).table.row(0, named=True)
    assert row["js"] > DEFAULT.js and row["drifted"]
    assert row["ks"] is None and row["wasserstein_norm"] is None


def test_categorical_types_mix() -> None:
    """A Categorical current against a String reference compares by label."""
    ref = pl.Series(["a", "b"] * 100)
    assert categorical_drift(ref.cast(pl.Categorical), ref)["js"] == 0.0


# --- the report ---------------------------------------------------------------------------------


def test_report_table_summary_and_prediction() -> None:
    g = rng(15)
    n = 5_000
    ref = pl.DataFrame({"a": g.normal(0, 1, n), "b": g.normal(0, 1, n), "c": g.normal(0, 1, n),
                        "k": g.choice(["u", "v"], n), "pred": g.gamma(2, 2, n)})
    cur = ref.with_columns(pl.col("a") + 1.0, pl.col("pred") * 1.5)
    report = drift_report(cur, ref, ["a", "b", "c"], ["k"], prediction="pred")
    assert report.table.schema == pl.Schema(SCHEMA)
    assert report.table.select("feature", "kind").rows() == [
        ("a", "numeric"), ("b", "numeric"), ("c", "numeric"), ("k", "categorical"),
        ("pred", "prediction")]
    s = report.summary
    assert (s.n_features, s.n_drifted, s.share_drifted) == (4, 1, 0.25)  # prediction not counted
    assert not s.alarm and s.top == ("a",) and s.prediction_drifted is True
    assert drift_report(cur, ref, ["a", "b", "c"], ["k"],
                        DriftThresholds(share=0.25)).summary.alarm
    threaded = drift_report(cur, ref, ["a", "b", "c"], ["k"], prediction="pred", workers=3)
    assert_frame_equal(threaded.table, report.table)


def test_report_without_columns() -> None:
    frame = pl.DataFrame({"x": [1.0]})
    report = drift_report(frame, frame, [], [])
    assert report.table.is_empty() and report.summary.share_drifted == 0.0
    assert not report.summary.alarm and report.summary.prediction_drifted is None


def test_monitored_columns_leave_out_the_calendar() -> None:
    numeric = ["day_of_week", "month", "lag_28", "cal_is_holiday", "periods_since_first_sale",
               "price"]
    categorical = ["cal_event_name", "store_region"]
    assert monitored_columns(numeric, categorical) == (["lag_28", "price"], ["store_region"])
