"""The retrain policy: when monitoring evidence is enough to retrain, and when it is not.

A window (one day's drift report, with the realized accuracy evaluated through that day)
*breaches* when any rule holds: the share of drifted features, the PSI of a key feature, the
realized WAPE against the expected one, or the realized bias crosses its threshold. A drift
*event* starts when `consecutive_windows` windows in a row breach (hysteresis: one noisy day
is not an event) and lasts until a window does not. Each event asks for one retrain, once,
and only when the cooldown since the last retrain has passed and today's retrains are under
the maximum. The policy file is YAML (sensors/retrain_policy.yaml is the default;
RETAIL_ML_RETRAIN_POLICY names another).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "sensors" / "retrain_policy.yaml"


STATISTICS = ("psi", "ks", "wasserstein", "js")


@dataclass(frozen=True)
class RetrainPolicy:
    drift_share: float = 0.3  # share of features drifted
    # when one feature counts as drifted: PSI, KS, W1/std(reference), Jensen-Shannon
    statistics: tuple[tuple[str, float], ...] = (("psi", 0.2), ("ks", 0.1),
                                                 ("wasserstein", 0.1), ("js", 0.1))
    key_features: tuple[str, ...] = ()
    key_feature_psi: float = 0.25
    wape_ratio: float = 1.3  # realized WAPE / the backtest WAPE the evaluation expected
    abs_bias: float = 0.3  # |sum(forecast - actual) / sum(actual)|: systematic under/over
    consecutive_windows: int = 2
    cooldown_hours: float = 24.0
    max_retrains_per_day: int = 2

    def __post_init__(self) -> None:
        checks = {"drift_share": 0 < self.drift_share <= 1,
                  "key_feature_psi": self.key_feature_psi > 0, "wape_ratio": self.wape_ratio > 0,
                  "abs_bias": self.abs_bias > 0,
                  "consecutive_windows": self.consecutive_windows >= 1,
                  "cooldown_hours": self.cooldown_hours >= 0,
                  "max_retrains_per_day": self.max_retrains_per_day >= 1}
        checks["statistics"] = all(k in STATISTICS and v > 0 for k, v in self.statistics)
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"retrain policy: invalid {', '.join(bad)}: {asdict(self)}")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def load_policy(path: Path) -> RetrainPolicy:
    """The policy in `path`; unknown keys are an error that names them and the file."""
    raw = yaml.safe_load(path.read_text()) or {}
    drift, perf, limits = raw.get("drift", {}), raw.get("performance", {}), raw.get("limits", {})
    known = {"drift": {"share", "key_features", "key_feature_psi", "statistics"},
             "performance": {"wape_ratio", "abs_bias"},
             "limits": {"consecutive_windows", "cooldown_hours", "max_retrains_per_day"}}
    unknown = [f"{section}.{key}" for section, keys in known.items()
               for key in raw.get(section, {}) if key not in keys]
    unknown += [key for key in raw if key not in known]
    if unknown:
        raise ValueError(f"{path}: unknown retrain policy keys {unknown}")
    stats = drift.get("statistics")
    values = {"drift_share": drift.get("share"),
              "statistics": tuple(sorted(stats.items())) if stats else None,
              "key_features": tuple(drift.get("key_features", ())),
              "key_feature_psi": drift.get("key_feature_psi"),
              "wape_ratio": perf.get("wape_ratio"), "abs_bias": perf.get("abs_bias"),
              **limits}
    try:
        return RetrainPolicy(**{k: v for k, v in values.items() if v is not None})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


@dataclass(frozen=True)
class Window:
    end: dt.date
    drift_share: float | None = None
    key_psi: dict[str, float] = field(default_factory=dict)
    wape_ratio: float | None = None
    bias: float | None = None


@dataclass(frozen=True)
class Decision:
    retrain: bool
    rule: str  # which rule decided: a breach rule, "no breach", "hysteresis", "cooldown", ...
    reason: str  # one sentence a person reads in the sensor's tick
    event_start: dt.date | None = None  # the first window of the event (the run key's part)


def breaches(policy: RetrainPolicy, window: Window) -> list[str]:
    """The rules `window` breaks, each as a short phrase with its numbers."""
    out = []
    if window.drift_share is not None and window.drift_share >= policy.drift_share:
        out.append(f"drift share {window.drift_share:.2f} >= {policy.drift_share}")
    for name in policy.key_features:
        psi = window.key_psi.get(name)
        if psi is not None and psi >= policy.key_feature_psi:
            out.append(f"PSI of {name} {psi:.2f} >= {policy.key_feature_psi}")
    ratio = window.wape_ratio
    if ratio is not None and not math.isnan(ratio) and ratio >= policy.wape_ratio:
        out.append(f"realized/expected WAPE {ratio:.2f} >= {policy.wape_ratio}")
    bias = window.bias
    if bias is not None and not math.isnan(bias) and abs(bias) >= policy.abs_bias:
        out.append(f"realized bias {bias:+.2f}, |bias| >= {policy.abs_bias}")
    return out


def decide(policy: RetrainPolicy, windows: list[Window], acted_on: dt.date | None,
           last_retrain: dt.datetime | None, retrains_today: int, now: dt.datetime) -> Decision:
    """`windows` oldest first; `acted_on`: the start of the last event a retrain was asked for."""
    if not windows:
        return Decision(False, "no evidence", "no drift report yet")
    latest = windows[-1]
    rules = breaches(policy, latest)
    if not rules:
        return Decision(False, "no breach", f"window {latest.end}: no rule breached")
    run = 0
    for window in reversed(windows):
        if not breaches(policy, window):
            break
        run += 1
    start = windows[len(windows) - run].end
    if run < policy.consecutive_windows:
        return Decision(False, "hysteresis", f"window {latest.end}: {'; '.join(rules)}, for "
                        f"{run} of {policy.consecutive_windows} consecutive windows", start)
    if acted_on == start:
        return Decision(False, "already retrained", f"the drift event since {start} already "
                        "asked for its retrain", start)
    cooldown = dt.timedelta(hours=policy.cooldown_hours)
    if last_retrain is not None and now - last_retrain < cooldown:
        return Decision(False, "cooldown", f"{'; '.join(rules)}, but the last retrain was at "
                        f"{last_retrain:%Y-%m-%d %H:%M} UTC, within the "
                        f"{policy.cooldown_hours:g} h cooldown", start)
    if retrains_today >= policy.max_retrains_per_day:
        return Decision(False, "daily maximum", f"{'; '.join(rules)}, but {retrains_today} "
                        f"retrains today reach the maximum of {policy.max_retrains_per_day}", start)
    return Decision(True, rules[0], f"window {latest.end}: {'; '.join(rules)}, for {run} "
                    "consecutive windows", start)
