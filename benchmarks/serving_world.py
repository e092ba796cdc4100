"""The serving benchmark's world: a simulated history, the forecast feature snapshot the service
answers from, a booster fitted on it and a Bento built from it, all under one RETAIL_ML_HOME.

Built once per scale and cached (a marker file says it is complete). It uses the project's own
code, not the Dagster jobs (the benchmark measures serving, not the pipeline): the simulator,
`build_features` and `split_by_time` for the training rows, `fit` as the `demand_model` asset
calls it, `horizon_features` for `gold/forecast_features` as the forecasting assets write it,
and `save_and_build` for the Bento. Runs in its own process (`python -m`), so the parent never
imports xgboost, polars or dagster.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2023, 1, 2)
SETUP_VERSION = 1  # bump when the cached layout changes


@dataclass(frozen=True)
class WorldScale:
    n_stores: int = 10
    n_items: int = 100
    days: int = 730  # two years, as the default world: the 364-day lag is filled in training
    max_rounds: int = 600  # `demand_model`'s default: early stopping decides the tree count
    seed: int = 7

    @property
    def key(self) -> str:
        return (f"s{self.n_stores}x{self.n_items}-d{self.days}-r{self.max_rounds}"
                f"-seed{self.seed}-v{SETUP_VERSION}")


def ensure_world(scale: WorldScale, cache: Path) -> dict[str, Any]:
    """The world's description (paths, tags, sizes), building it first if not cached, with a
    Bento of the code as it is now (rebuilt when the code it packs changed)."""
    root = cache / scale.key
    marker = root / "ready.json"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        meta = _build(scale, root)
        meta["setup_s"] = round(time.perf_counter() - started, 1)
        marker.write_text(json.dumps(meta, indent=2))
    meta = json.loads(marker.read_text())
    return {**meta, **_ensure_bento(root, Path(meta["bentoml_home"]))}


def code_hash() -> str:
    """Of the sources a Bento packs (bentofile.yaml's include): a changed service, transform or
    setting means a new Bento, or the benchmark would measure old code."""
    digest = hashlib.sha256()
    for top in ("bentos", "ml_assets", "resources"):
        for path in sorted((REPO / top).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode() + path.read_bytes())
    digest.update((REPO / "bentos" / "demand_forecaster" / "bentofile.yaml").read_bytes())
    return digest.hexdigest()[:16]


def _ensure_bento(root: Path, bentoml_home: Path) -> dict[str, Any]:
    from ml_assets.deployment.bento import save_and_build

    built_file = root / "bentos.json"
    built = json.loads(built_file.read_text()) if built_file.exists() else {}
    code = code_hash()
    if code not in built:
        import xgboost as xgb

        spec = json.loads((root / "model_spec.json").read_text())
        booster = xgb.Booster(model_file=str(root / "model.ubj"))
        started = time.perf_counter()
        built[code] = save_and_build(booster, spec["columns"], spec["labels"], bentoml_home)
        built[code]["build_s"] = round(time.perf_counter() - started, 1)
        built_file.write_text(json.dumps(built, indent=2))
    return {"code_hash": code, **built[code]}


def _build(scale: WorldScale, root: Path) -> dict[str, Any]:
    import polars as pl

    from ml_assets.features.transforms import FeatureSpec, build_features
    from ml_assets.forecasting.horizon import horizon_features
    from ml_assets.simulation import World, WorldConfig
    from ml_assets.training.dataset import (
        TARGET,
        canonical_order,
        category_levels,
        model_columns,
        split_by_time,
        to_matrix,
    )
    from ml_assets.training.model import fit
    from resources.delta import DeltaStore
    from resources.settings import simulated_dataset

    home = root / "home"  # the server's RETAIL_ML_HOME
    dataset = simulated_dataset(home)  # what load_settings gives the service: daily, H = 28
    spec = FeatureSpec(horizon=dataset.horizon_periods, period_days=dataset.period_days)
    end = START + dt.timedelta(days=scale.days)
    world = World(WorldConfig(seed=scale.seed, n_stores=scale.n_stores, n_items=scale.n_items,
                              start_date=START))
    sales = world.sales(START, end).with_columns(pl.col("units_sold").cast(pl.Float64))
    dims = {"stores": world.stores, "items": world.items,
            "calendar": world.calendar(START - dt.timedelta(days=366),
                                       end + dt.timedelta(days=366))}

    features = build_features(sales, spec, **dims)
    frame = split_by_time(features, spec.horizon, spec.period_days,
                          dataset.training_window_periods)
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    train, valid = (canonical_order(frame.filter(pl.col("split") == s), columns)
                    for s in ("train", "valid"))
    result = fit(to_matrix(train, columns, levels), train.get_column(TARGET).to_numpy(),
                 to_matrix(valid, columns, levels), valid.get_column(TARGET).to_numpy(),
                 max_rounds=scale.max_rounds)

    origin = sales.get_column("date").max()
    snapshot = horizon_features(sales, origin, spec, **dims)
    delta = DeltaStore(root=str(home / "delta"))
    root.mkdir(parents=True, exist_ok=True)
    features_version = delta.overwrite("gold/forecast_features", snapshot)

    # the booster in XGBoost's own format, for the Bentos built from it (see _ensure_bento)
    result.booster.save_model(root / "model.ubj")
    (root / "model_spec.json").write_text(json.dumps({
        "columns": {"numeric": columns.numeric, "categorical": columns.categorical,
                    "category_levels": levels},
        "labels": {"mlflow_version": "1", "mlflow_run_id": "serving-bench",
                   "metric_valid_wape": f"{result.valid_wape[result.objective]:.4f}"}}))
    return {"scale": asdict(scale), "root": str(root), "home": str(home),
            "bentoml_home": str(home / "bentoml"),
            "series": snapshot.select("store_id", "item_id").n_unique(),
            "snapshot_rows": snapshot.height, "features_version": features_version,
            "origin": origin.isoformat(), "history_rows": sales.height,
            "train_rows": train.height, "objective": result.objective,
            "trees": result.booster.num_boosted_rounds(), "n_features": len(columns.all)}


if __name__ == "__main__":
    print(json.dumps(ensure_world(WorldScale(**json.loads(sys.argv[1])), Path(sys.argv[2]))))
