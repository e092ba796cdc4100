"""The promotion gate: a challenger is promoted only when it is better, by the numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def decide(challenger: float, seasonal_naive: float, champion: float | None,
           margin: float) -> GateDecision:
    """Passes when the challenger's backtest WAPE beats seasonal naive, and beats the champion's
    by at least `margin` (relative: 0.02 = 2 % lower) when there is a champion."""
    if math.isnan(challenger):
        return GateDecision(False, "The challenger's backtest WAPE is undefined (no actuals "
                                   "in the backtest windows), so it cannot be judged.")
    if not challenger < seasonal_naive:
        return GateDecision(False, f"Blocked: the challenger's WAPE {challenger:.4f} does not "
                                   f"beat seasonal naive ({seasonal_naive:.4f}).")
    if champion is None:
        return GateDecision(True, f"Passed: no champion yet, and the challenger's WAPE "
                                  f"{challenger:.4f} beats seasonal naive ({seasonal_naive:.4f}).")
    needed = champion * (1 - margin)
    if not challenger <= needed:
        return GateDecision(False, f"Blocked: the challenger's WAPE {challenger:.4f} is not at "
                                   f"least {margin:.1%} below the champion's {champion:.4f} "
                                   f"(needs <= {needed:.4f}). The champion stays.")
    return GateDecision(True, f"Passed: the challenger's WAPE {challenger:.4f} beats the "
                              f"champion's {champion:.4f} by more than {margin:.1%} and seasonal "
                              f"naive's {seasonal_naive:.4f}.")
