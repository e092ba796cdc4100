"""The retrain policy's rules: thresholds, hysteresis, one retrain per event, cooldown, daily
maximum, and a policy file that says what is wrong with it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ml_assets.monitoring.policy import RetrainPolicy, Window, breaches, decide, load_policy

POLICY = RetrainPolicy(drift_share=0.3, key_features=("lag_7",), key_feature_psi=0.25,
                       wape_ratio=1.3, consecutive_windows=2, cooldown_hours=24,
                       max_retrains_per_day=1)
NOW = dt.datetime(2025, 3, 20, 12, tzinfo=dt.UTC)
DAY = dt.date(2025, 3, 10)


def _windows(*shares: float, **extra: object) -> list[Window]:
    return [Window(DAY + dt.timedelta(days=i), drift_share=s, **extra)
            for i, s in enumerate(shares)]


def _decide(windows: list[Window], acted_on: dt.date | None = None,
            last: dt.datetime | None = None, today: int = 0):
    return decide(POLICY, windows, acted_on, last, today, NOW)


@pytest.mark.parametrize(("window", "rule"), [
    (Window(DAY, drift_share=0.3), "drift share 0.30 >= 0.3"),
    (Window(DAY, drift_share=0.1, key_psi={"lag_7": 0.4}), "PSI of lag_7 0.40 >= 0.25"),
    (Window(DAY, wape_ratio=1.5), "realized/expected WAPE 1.50 >= 1.3"),
    (Window(DAY, bias=-0.35), "realized bias -0.35, |bias| >= 0.3")])
def test_each_rule_breaches_at_its_threshold(window: Window, rule: str) -> None:
    assert breaches(POLICY, window) == [rule]


def test_below_every_threshold_nothing_breaches() -> None:
    quiet = Window(DAY, drift_share=0.29, key_psi={"lag_7": 0.2, "other": 9.0}, wape_ratio=1.2,
                   bias=0.29)
    assert breaches(POLICY, quiet) == []
    assert _decide([quiet]).rule == "no breach"


def test_hysteresis_needs_consecutive_breaching_windows() -> None:
    one = _decide(_windows(0.1, 0.5))
    assert (one.retrain, one.rule) == (False, "hysteresis")
    assert "for 1 of 2 consecutive windows" in one.reason
    interrupted = _decide(_windows(0.5, 0.1, 0.5))
    assert interrupted.rule == "hysteresis"
    two = _decide(_windows(0.1, 0.5, 0.6))
    assert two.retrain and two.event_start == DAY + dt.timedelta(days=1)
    assert two.reason == f"window {DAY + dt.timedelta(days=2)}: drift share 0.60 >= 0.3, for " \
                         "2 consecutive windows"


def test_one_event_asks_for_one_retrain() -> None:
    windows = _windows(0.5, 0.5)
    first = _decide(windows)
    assert first.retrain
    later = _decide(_windows(0.5, 0.5, 0.7, 0.8), acted_on=first.event_start)
    assert (later.retrain, later.rule) == (False, "already retrained")
    # the event ends, a new one starts: it may retrain again
    again = _decide(_windows(0.5, 0.5, 0.1, 0.6, 0.6), acted_on=first.event_start)
    assert again.retrain and again.event_start == DAY + dt.timedelta(days=3)


def test_cooldown_and_daily_maximum_hold_a_retrain_back() -> None:
    windows = _windows(0.5, 0.5)
    cool = _decide(windows, last=NOW - dt.timedelta(hours=3))
    assert (cool.retrain, cool.rule) == (False, "cooldown")
    assert "within the 24 h cooldown" in cool.reason
    assert _decide(windows, last=NOW - dt.timedelta(hours=25)).retrain
    full = _decide(windows, last=NOW - dt.timedelta(hours=25), today=1)
    assert (full.retrain, full.rule) == (False, "daily maximum")


def test_no_windows_is_no_evidence() -> None:
    assert _decide([]).rule == "no evidence"


def test_policy_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("drift: {share: 0.4, key_features: [lag_7], key_feature_psi: 0.3,\n"
                    "        statistics: {psi: 0.3, ks: 0.2}}\n"
                    "performance: {wape_ratio: 1.5, abs_bias: 0.4}\n"
                    "limits: {consecutive_windows: 3, cooldown_hours: 12, "
                    "max_retrains_per_day: 4}\n")
    policy = load_policy(path)
    assert policy == RetrainPolicy(0.4, (("ks", 0.2), ("psi", 0.3)), ("lag_7",), 0.3, 1.5, 0.4,
                                   3, 12, 4)
    assert len(policy.digest()) == 12 and policy.digest() != RetrainPolicy().digest()
    path.write_text("drift: {shares: 0.4}\nlimit: {}\n")
    with pytest.raises(ValueError, match=r"policy.yaml: unknown retrain policy keys "
                                         r"\['drift.shares', 'limit'\]"):
        load_policy(path)
    path.write_text("limits: {consecutive_windows: 0}\n")
    with pytest.raises(ValueError, match="policy.yaml: retrain policy: invalid "
                                         "consecutive_windows"):
        load_policy(path)


def test_the_default_policy_file_loads() -> None:
    from sensors.retrain import DEFAULT_POLICY

    assert load_policy(DEFAULT_POLICY).consecutive_windows >= 1
