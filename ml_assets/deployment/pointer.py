"""The champion pointer: which model in the BentoML store serving should answer with.

`demand_forecaster_bento` (and a rollback) publish it under RETAIL_ML_HOME/serving; a running
forecaster polls it and hot-swaps to the model it names. One small JSON file replaced by an
atomic rename, so a reader sees the old pointer or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

POINTER = "champion.json"


@dataclass(frozen=True)
class ChampionPointer:
    model_tag: str  # in the BentoML model store, e.g. demand_forecaster:abc123
    mlflow_version: str
    bento_tag: str
    published_at: str
    reason: str  # "promoted", "rollback", ...


def publish_champion(root: Path, model_tag: str, mlflow_version: str, bento_tag: str,
                     reason: str) -> ChampionPointer:
    root.mkdir(parents=True, exist_ok=True)
    pointer = ChampionPointer(model_tag, mlflow_version, bento_tag,
                              dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), reason)
    tmp = root / f".{POINTER}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(asdict(pointer), indent=1))
    os.replace(tmp, root / POINTER)
    return pointer


def read_champion(root: Path) -> ChampionPointer | None:
    """The published pointer, None when none is."""
    try:
        return ChampionPointer(**json.loads((root / POINTER).read_text()))
    except FileNotFoundError:
        return None
