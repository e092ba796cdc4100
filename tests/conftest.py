"""Shared fixtures: a small simulated world in a temporary RETAIL_ML_HOME, pinned in time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from resources.settings import Settings, load_settings

TODAY = dt.date(2025, 3, 1)


def small_world_env(home: Path, offset_days: int = 0, **extra: str) -> dict[str, str]:
    """Environment for a 4-store x 6-item world with 180 days of history ending `offset_days`
    before today (the pinned TODAY unless overridden)."""
    dataset = home / "dataset.yaml"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_text(
        "source: simulated\n"
        "simulation: {seed: 3, n_stores: 4, n_items: 6, history_days: 180,"
        f" history_end_offset_days: {offset_days}}}\n")
    return {"RETAIL_ML_HOME": str(home), "RETAIL_ML_DATASET": str(dataset),
            "RETAIL_ML_TODAY": TODAY.isoformat(), **extra}


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    return load_settings(small_world_env(tmp_path / "home"))
