"""Time partitions: daily or weekly windows from the dataset's first day, bounded by the clock
(or by a historical dataset's last day)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ml_assets.ingest.landing import date_span, list_files
from ml_assets.simulation.landing import world_start
from resources.settings import DatasetConfig, Settings


def first_day(settings: Settings) -> dt.date:
    ds = settings.dataset
    if ds.start_date is not None:
        return ds.start_date
    if ds.simulation is not None:
        return world_start(settings)
    # Real files without a declared start: the earliest parseable date on disk.
    span = date_span(list_files(ds.sales), ds.sales)
    if span is None:
        raise FileNotFoundError(f"Dataset '{ds.name}': no file with a parseable date matches "
                                f"{ds.sales.path}, and no start_date is set")
    return span[0]


def build_partitions(settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    ds: DatasetConfig = settings.dataset
    start = first_day(settings)
    end = None if ds.end_date is None else ds.end_date + dt.timedelta(days=ds.period_days)
    ahead = 0
    if end is None and settings.clock != "wall":
        # A pinned clock (tests, reproductions) or the simulated world's own clock bounds the
        # partitions; the world's may run ahead of the machine's, which Dagster only shows
        # through a positive end offset.
        end = settings.today
        ahead = max(0, (end - dt.date.today()).days // ds.period_days + 1)
    if ds.frequency == "daily":
        return dg.DailyPartitionsDefinition(start_date=start.isoformat(),
                                            end_date=end and end.isoformat(), end_offset=ahead)
    # Dagster counts weekdays from Sunday = 0; Python from Monday = 0.
    return dg.WeeklyPartitionsDefinition(start_date=start.isoformat(),
                                         end_date=end and end.isoformat(),
                                         day_offset=(start.weekday() + 1) % 7, end_offset=ahead)


def keys_with_data(settings: Settings, keys: list[str]) -> list[str]:
    """`keys` up to the last one holding a landed date: partitions after the data stay
    unmaterialized (visibly missing) instead of green and empty."""
    ds = settings.dataset
    if ds.simulation is not None:  # its partitions end at its clock: the last landed day
        return keys
    span = date_span(list_files(ds.sales), ds.sales)
    kept = [k for k in keys if span is None or k <= span[1].isoformat()]
    return kept or keys


def window_dates(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The run's partition range as dates, [start, end)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def table_pool(table: str) -> str:
    """The Dagster concurrency pool of a table's writers: runs writing one table take turns
    (the instance's pool limit; deploy/dagster.local.yaml sets 1), so two runs on one partition
    queue instead of racing for the same window."""
    return "delta/" + table
