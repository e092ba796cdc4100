"""The Bento of the demand forecaster: the booster into BentoML's model store, then the build.

BentoML fixes its store location (BENTOML_HOME) in process-wide singletons on first use, while
one process (a test session, a Dagster run worker) may build into several homes. So the save
and the build run in a child process with its own BENTOML_HOME; the booster crosses over as a
UBJ file and the rest as JSON, never as a pickle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import xgboost as xgb

import bentos

MODEL_NAME = "demand_forecaster"
BENTOFILE = Path(bentos.__file__).resolve().parent / "demand_forecaster" / "bentofile.yaml"
BUILD_CTX = BENTOFILE.parents[2]  # the repository root: the service imports project code


def save_and_build(booster: xgb.Booster | None, columns: dict, labels: dict[str, str],
                   bentoml_home: Path, intervals: dict | None = None) -> dict[str, str]:
    """Saves `booster` as model `demand_forecaster` (with `labels`, and `columns` as metadata:
    numeric, categorical, category_levels) under `bentoml_home`, then builds the Bento from
    bentos/demand_forecaster/bentofile.yaml there. Returns the model and Bento tags.

    A baseline has no booster: `columns["baseline"]` names the feature-snapshot column it
    forecasts with, saved as a JSON model (`baseline.json`) that the service reads.
    `intervals` (the version's `Calibration.to_json()`, None when it has none) travels in the
    model's metadata as `intervals`: the service's prediction intervals."""
    with tempfile.TemporaryDirectory(prefix="bento_build_") as tmp:
        work = Path(tmp)
        if booster is not None:
            booster.save_model(work / "model.ubj")
        (work / "spec.json").write_text(json.dumps({"columns": columns, "labels": labels,
                                                    "intervals": intervals}))
        env = {**os.environ, "BENTOML_HOME": str(Path(bentoml_home).resolve()),
               "BENTOML_DO_NOT_TRACK": "true"}
        proc = subprocess.run([sys.executable, "-m", __name__, str(work)], cwd=BUILD_CTX,
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"Bento build into {bentoml_home} failed (exit "
                               f"{proc.returncode}):\n{proc.stderr[-6000:]}")
        return json.loads((work / "tags.json").read_text())


def _save_and_build_here(work: Path) -> None:
    """The child's side: BENTOML_HOME is already set in its environment."""
    import bentoml

    spec = json.loads((work / "spec.json").read_text())
    metadata = {**spec["columns"], **({"intervals": spec["intervals"]}
                                      if spec.get("intervals") else {})}
    if spec["columns"].get("baseline"):
        with bentoml.models.create(MODEL_NAME, labels=spec["labels"],
                                   metadata=metadata) as model:
            Path(model.path, "baseline.json").write_text(json.dumps(spec["columns"]))
    else:
        booster = xgb.Booster(model_file=str(work / "model.ubj"))
        model = bentoml.xgboost.save_model(MODEL_NAME, booster, labels=spec["labels"],
                                           metadata=metadata)
    bento = bentoml.bentos.build_bentofile(str(BENTOFILE), build_ctx=str(BUILD_CTX),
                                           labels=spec["labels"],
                                           args={"model_tag": str(model.tag)})
    (work / "tags.json").write_text(json.dumps({"model_tag": str(model.tag),
                                                "bento_tag": str(bento.tag)}))


if __name__ == "__main__":
    _save_and_build_here(Path(sys.argv[1]))
