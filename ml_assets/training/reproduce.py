"""`retail-ml reproduce <version>`: a registered model retrained from the data it recorded.

The version's tags name the exact Delta version of the training set it learnt from; Delta time
travel reads those rows again, and the recorded recipe (objective, rounds) refits them with the
same parameters and seed. The reproduction is checked, not assumed: both boosters score every
training row and the largest difference is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ml_assets.training.dataset import (
    TARGET,
    canonical_order,
    category_levels,
    model_columns,
    to_matrix,
)
from ml_assets.training.model import predict, refit, scale_tag
from ml_assets.training.registry import load_version
from resources.prod import reader_options
from resources.settings import Settings

TRAINING_TABLE = "gold/training_set"
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Reproduction:
    version: str
    training_set_version: int
    objective: str
    rounds: int
    rows: int
    max_abs_diff: float

    @property
    def identical(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


def reproduce(settings: Settings, version: str) -> Reproduction:
    model = load_version(settings.mlflow_tracking_uri, version)
    tags = model.tags
    missing = [t for t in ("delta.training_set", "objective", "rounds") if t not in tags]
    if missing:
        raise ValueError(f"version {version} does not record {missing}: it cannot be reproduced")
    data_version = int(tags["delta.training_set"])
    uri = settings.delta_table(TRAINING_TABLE)
    frame = pl.read_delta(uri, version=data_version, storage_options=reader_options(uri))
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    if (columns, levels) != (model.columns, model.levels):
        raise ValueError(f"version {version}: the training set at Delta version {data_version} "
                         "has other feature columns or levels than the model recorded")
    train = canonical_order(frame.filter(pl.col("split") == "train"), columns)
    booster = refit(to_matrix(train, columns, levels), train.get_column(TARGET).to_numpy(),
                    tags["objective"], int(tags["rounds"]), scale_tag(tags.get("target_scale")))
    rows = frame.filter(pl.col("split").is_in(["train", "valid"]))
    x = to_matrix(rows, columns, levels)
    diff = np.abs(predict(booster, x) - predict(model.booster, x))
    return Reproduction(version, data_version, tags["objective"], int(tags["rounds"]),
                        rows.height, float(diff.max()) if diff.size else 0.0)
