"""The laptop Dagster instance that `retail-ml` commands, `make dev` and `make loop` share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from resources.settings import Settings

LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "dagster.local.yaml"


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME (default: under RETAIL_ML_HOME), created, with deploy/dagster.local.yaml as
    its dagster.yaml unless one is there already. Sets DAGSTER_HOME for this process."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(LOCAL_CONFIG, config)
    return home
