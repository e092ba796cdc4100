"""The promotion gate's decision, on hand-picked WAPEs."""

from __future__ import annotations

import math

import pytest

from ml_assets.evaluation.gate import decide


def test_first_model_only_has_to_beat_seasonal_naive() -> None:
    assert decide(0.30, 0.40, None, 0.01).passed
    blocked = decide(0.41, 0.40, None, 0.01)
    assert not blocked.passed and "seasonal naive (0.4000)" in blocked.reason


@pytest.mark.parametrize(("challenger", "champion", "margin", "passed"), [
    (0.297, 0.300, 0.01, True),   # exactly 1 % lower: enough
    (0.298, 0.300, 0.01, False),  # 0.67 % lower: not enough
    (0.300, 0.300, 0.0, True),    # no margin: a tie is enough
    (0.250, 0.300, 0.20, False),  # 16.7 % lower against a 20 % margin
])
def test_challenger_must_beat_the_champion_by_the_margin(challenger: float, champion: float,
                                                         margin: float, passed: bool) -> None:
    decision = decide(challenger, 0.5, champion, margin)
    assert decision.passed is passed
    if not passed:
        assert "The champion stays" in decision.reason and f"{champion:.4f}" in decision.reason


def test_beating_the_champion_is_not_enough_without_beating_naive() -> None:
    assert not decide(0.45, 0.40, 0.60, 0.01).passed


def test_undefined_wape_never_passes() -> None:
    decision = decide(math.nan, 0.40, None, 0.01)
    assert not decision.passed and "undefined" in decision.reason
