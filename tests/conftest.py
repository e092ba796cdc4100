"""Shared fixtures: a small simulated world in a temporary RETAIL_ML_HOME, pinned in time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from resources.settings import Settings, load_settings

TODAY = dt.date(2025, 3, 1)


def small_world_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a 4-store x 6-item world with 180 days of history ending yesterday."""
    dataset = home / "dataset.yaml"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_text(
        "source: simulated\n"
        "simulation: {seed: 3, n_stores: 4, n_items: 6, history_days: 180,"
        " history_end_offset_days: 0}\n")
    return {"RETAIL_ML_HOME": str(home), "RETAIL_ML_DATASET": str(dataset),
            "RETAIL_ML_TODAY": TODAY.isoformat(), **extra}


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    return load_settings(small_world_env(tmp_path / "home"))
