"""The serving benchmark's baseline: the least an HTTP forecast server can be in Python.

A bare Starlette app under uvicorn (one worker, no access log, uvloop and httptools when
installed, as `bentoml serve` picks them), with the service's model and feature lookup: the
booster from the BentoML model store (the same UBJ file the Bento loads), the same Delta
snapshot turned into the model's input once by the same function as the service (`to_array`,
or `to_matrix` with --matrix pandas), a (store, item, date) -> row dict, and `predict_inplace`
on the selected rows per request. What it leaves out is what
BentoML and the service add: request validation into pydantic models, the middleware stack
(metrics, tracing, access log, the service's edge), the prediction log.

    python -m benchmarks.raw_asgi --home RETAIL_ML_HOME --model MODEL_DIR --port 3100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import uvicorn
import xgboost as xgb
import yaml
from deltalake import DeltaTable
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ml_assets.training import dataset
from ml_assets.training.dataset import Columns
from ml_assets.training.model import predict_inplace

FEATURES_TABLE = "gold/forecast_features"  # bentos.demand_forecaster.service reads this one
# The service's encoding of the snapshot: one float32 array (`to_array`) where the project has
# it, else the pandas frame of `to_matrix`; "pandas" measures what the array saves.
MATRICES = ("array", "pandas") if hasattr(dataset, "to_array") else ("pandas",)


class Forecaster:
    def __init__(self, home: Path, model_dir: Path, matrix: str = MATRICES[0]) -> None:
        info = yaml.safe_load((model_dir / "model.yaml").read_text())
        meta = info["metadata"]
        self.booster = xgb.Booster(model_file=str(model_dir / "saved_model.ubj"))
        self.model_tag = f"{info['name']}:{info['version']}"
        self.model_version = str(info.get("labels", {}).get("mlflow_version", ""))
        columns = Columns(list(meta["numeric"]), list(meta["categorical"]))
        path = str(home / "delta" / FEATURES_TABLE)
        self.features_version = DeltaTable(path).version()
        features = pl.read_delta(path, version=self.features_version)
        encode = dataset.to_array if matrix == "array" else dataset.to_matrix
        self.matrix = encode(features, columns, meta["category_levels"])
        self.select = self.matrix.__getitem__ if matrix == "array" else self.matrix.iloc.__getitem__
        keys = features.select("store_id", "item_id", "date").rows()
        self.row_of = {key: i for i, key in enumerate(keys)}
        self.origins = [d.isoformat() for d in features.get_column("origin")]
        self.horizons = features.get_column("horizon").to_list()

    def forecast(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Forecasts for the requests, or None if one is not in the snapshot."""
        rows = [self.row_of.get((r["store_id"], r["item_id"], dt.date.fromisoformat(r["date"])))
                for r in requests]
        if None in rows:
            return None
        units = predict_inplace(self.booster, self.select(rows))
        return [{"store_id": r["store_id"], "item_id": r["item_id"], "date": r["date"],
                 "units": float(u), "model_version": self.model_version,
                 "model_tag": self.model_tag, "features_origin": self.origins[row],
                 "features_version": self.features_version, "horizon": self.horizons[row]}
                for r, u, row in zip(requests, units, rows, strict=True)]


def build_app(forecaster: Forecaster) -> Starlette:
    async def forecast(request: Request) -> Response:
        answer = forecaster.forecast([json.loads(await request.body())])
        if answer is None:
            return JSONResponse({"error": "not in the feature snapshot"}, status_code=404)
        return JSONResponse(answer[0])

    async def forecast_batch(request: Request) -> Response:
        answer = forecaster.forecast(json.loads(await request.body())["requests"])
        if answer is None:
            return JSONResponse({"error": "not in the feature snapshot"}, status_code=404)
        return JSONResponse(answer)

    async def ping(request: Request) -> Response:  # the load generator's ceiling
        return Response(b"ok", media_type="text/plain")

    return Starlette(routes=[Route("/forecast", forecast, methods=["POST"]),
                             Route("/forecast_batch", forecast_batch, methods=["POST"]),
                             Route("/ping", ping, methods=["GET", "POST"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the world's RETAIL_ML_HOME")
    parser.add_argument("--model", type=Path, required=True,
                        help="the model's folder in the BentoML model store")
    parser.add_argument("--matrix", choices=MATRICES, default=MATRICES[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3100)
    args = parser.parse_args(argv)
    app = build_app(Forecaster(args.home, args.model, args.matrix))
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False,
                log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
