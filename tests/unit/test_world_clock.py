"""The simulated world's own clock: after the history lands the world's today is the machine's,
so forecasts start today; `retail-ml simulate --days N` moves it ahead, and the partitions and
the landing sensor follow it (after the code location reloads)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from ml_assets.definitions import build_definitions
from ml_assets.simulation.landing import land
from resources.settings import load_settings


def _env(home: Path) -> dict[str, str]:
    dataset = home / "dataset.yaml"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_text("source: simulated\n"
                       "simulation: {seed: 3, n_stores: 2, n_items: 3, history_days: 40}\n")
    return {"RETAIL_ML_HOME": str(home), "RETAIL_ML_DATASET": str(dataset)}


def _last_key(env: dict[str, str]) -> tuple[dg.Definitions, str]:
    settings = load_settings(env)
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    keys = defs.resolve_job_def("ingest_job").partitions_def.get_partition_keys()
    return defs, keys[-1]


def test_the_world_clock_starts_today_and_moves_with_what_lands(tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    today = dt.date.today()
    before = load_settings(env)
    assert before.clock == "wall" and before.today == today  # nothing has landed yet
    written = land(before)
    assert written[-1].name == f"sales_{today - dt.timedelta(days=1)}.csv"
    settings = load_settings(env)
    assert (settings.clock, settings.today) == ("world", today)
    stale_defs, last = _last_key(env)
    assert last == str(today - dt.timedelta(days=1))  # the partitions end at the data

    land(settings, days=5)  # ahead of the machine's clock: the world's own
    ahead = load_settings(env)
    assert ahead.today == today + dt.timedelta(days=5)
    defs, last = _last_key(env)
    assert last == str(today + dt.timedelta(days=4))

    # A code location loaded before the clock moved says so, and keeps the files for later.
    sensor = stale_defs.resolve_sensor_def("landing_sensor")
    resources = {"platform": stale_defs.resources["platform"]}
    with dg.DagsterInstance.ephemeral() as instance:
        with dg.build_sensor_context(instance=instance, definitions=stale_defs,
                                     resources=resources) as context:
            skipped = sensor(context)
        assert isinstance(skipped, dg.SkipReason) and "Reload" in skipped.skip_message
        assert context.cursor is None
        with dg.build_sensor_context(instance=instance, definitions=defs,
                                     resources={"platform": defs.resources["platform"]}
                                     ) as context:
            request = sensor(context)
        assert isinstance(request, dg.RunRequest)
        assert request.tags["dagster/asset_partition_range_end"] == last
        assert len(context.cursor) < 1024
