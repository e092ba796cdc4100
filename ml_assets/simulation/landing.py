"""Landing the simulated world's days as files, the way a retailer's daily drop arrives: one
sales file per day, and on Mondays the plan delivery known at the end of that day
(`World.write_landing`). A delivery is written when its day lands, never earlier."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ml_assets.simulation.world import Scenario, World, WorldConfig, check_scenario
from resources.settings import WORLD_FILE, Settings

SCENARIOS_FILE = "scenarios.json"


def world_start(settings: Settings) -> dt.date:
    """The world's first day. It is derived from the clock until the history lands, then kept
    beside the files: a world derived again on a later day would start later and disagree with
    the days already landed."""
    sim = settings.dataset.simulation
    if sim is None:
        raise ValueError(f"Dataset '{settings.dataset.name}' is not the simulated world")
    path = settings.landing_dir / WORLD_FILE
    if sim.start_date is None and path.exists():
        return dt.date.fromisoformat(json.loads(path.read_text())["start"])
    return sim.resolved_start(settings.today)


def world_for(settings: Settings) -> World:
    """The world of these settings, with every scenario started so far (kept beside the files,
    so days landed later come from the same world)."""
    start = world_start(settings)  # raises for a dataset that is not simulated
    sim = settings.dataset.simulation
    assert sim is not None
    path = settings.landing_dir / SCENARIOS_FILE
    saved = json.loads(path.read_text()) if path.exists() else []
    scenarios = tuple(Scenario(kind=s["kind"], start=dt.date.fromisoformat(s["start"]),
                               magnitude=s["magnitude"], stores=tuple(s.get("stores", ())))
                      for s in saved)
    return World(WorldConfig(seed=sim.seed, n_stores=sim.n_stores, n_items=sim.n_items,
                             start_date=start, scenarios=scenarios,
                             popularity_wander=sim.popularity_wander))


def landed_days(settings: Settings) -> list[dt.date]:
    files = sorted((settings.landing_dir / "sales").glob("sales_*.*"))
    return [dt.date.fromisoformat(p.stem.removeprefix("sales_")) for p in files]


def add_scenario(settings: Settings, kind: str, start: dt.date, magnitude: float) -> None:
    check_scenario(Scenario(kind=kind, start=start, magnitude=magnitude))  # type: ignore[arg-type]
    path = settings.landing_dir / SCENARIOS_FILE
    saved = json.loads(path.read_text()) if path.exists() else []
    saved.append({"kind": kind, "start": start.isoformat(), "magnitude": magnitude})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=2))


def land(settings: Settings, until: dt.date | None = None, days: int | None = None,
         scenario: tuple[str, float] | None = None) -> list[Path]:
    """Lands the next days after the last landed one (the history first, when nothing has
    landed): `days` of them, or up to `until` (inclusive), or the history only."""
    sim = settings.dataset.simulation
    assert sim is not None
    landed = landed_days(settings)
    start = world_start(settings)
    first = landed[-1] + dt.timedelta(days=1) if landed else start
    if days is not None:
        end = first + dt.timedelta(days=days)
    elif until is not None:
        end = until + dt.timedelta(days=1)
    else:
        end = start + dt.timedelta(days=sim.history_days)
    if settings.clock != "world":
        end = min(end, settings.today)  # a wall or pinned clock: never land its future
    if scenario is not None:
        add_scenario(settings, scenario[0], first, scenario[1])
    if end <= first:
        return []
    written = world_for(settings).write_landing(settings.landing_dir, first, end)
    # The world's clock moves with what has landed: partitions, freshness and serving follow it.
    anchor = settings.landing_dir / WORLD_FILE
    anchor.parent.mkdir(parents=True, exist_ok=True)
    anchor.write_text(json.dumps({"start": start.isoformat(), "today": end.isoformat()}))
    return written
