"""Landing files → (bronze rows, quarantined rows) for one window of dates. No Dagster here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ml_assets.ingest.landing import check_columns, list_files, read_raw
from ml_assets.ingest.validate import SUPERSEDED, raw_columns, split_sales
from resources.settings import CONTRACT_REQUIRED, DatasetConfig

QUARANTINE_SCHEMA = {
    "date": pl.Date, "store_id": pl.Utf8, "item_id": pl.Utf8, "reason": pl.Utf8,
    "source_file": pl.Utf8, "row_number": pl.Int64, "raw": pl.Utf8,
}


@dataclass
class IngestResult:
    bronze: pl.DataFrame
    quarantine: pl.DataFrame
    files: list[Path]
    rows_in: int
    clipped: int
    reasons: dict[str, int] = field(default_factory=dict)
    # Bad rows among the window's rows. Rows superseded by a later delivery are not bad, and
    # orphans (no usable date) are reported, not charged to every window that reads their file.
    quarantine_share: float = 0.0


def ingest_window(
    ds: DatasetConfig,
    start: dt.date,
    end: dt.date,
    first_day: dt.date,
    known_stores: pl.Series | None = None,
    known_items: pl.Series | None = None,
) -> IngestResult:
    """Validates every landing file and keeps the rows of [start, end).

    Rows whose date cannot be placed in any partition (unparseable, or outside the dataset's
    range) are kept too: every run that reads their file quarantines them again, and the
    quarantine write replaces them, so they are neither lost nor duplicated.
    """
    files = list_files(ds.sales)
    if not files:
        raise FileNotFoundError(f"No landing file matches {ds.sales.path}")
    check_columns(files, ds.sales, list(CONTRACT_REQUIRED))
    wanted = raw_columns(ds)
    raw = pl.concat(
        [read_raw(p, ds.sales, wanted).with_columns(pl.lit(i, pl.Int32).alias("_file_rank"))
         for i, p in enumerate(files)],
        how="vertical_relaxed",
    )
    split = split_sales(raw, ds, first_day, known_stores, known_items)
    in_window = pl.col("date").is_between(pl.lit(start), pl.lit(end), closed="left")
    orphan = pl.col("date").is_null() | (pl.col("date") < pl.lit(first_day))
    if ds.end_date is not None:
        orphan = orphan | (pl.col("date") > pl.lit(ds.end_date))
    bronze = split.bronze.filter(in_window).sort("date", "store_id", "item_id")
    quarantine = split.quarantine.filter(in_window | orphan).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
    bad_in_window = quarantine.filter(in_window & (pl.col("reason") != SUPERSEDED)).height
    in_window_rows = bronze.height + quarantine.filter(in_window).height
    reasons = (quarantine.get_column("reason").str.split("; ").explode().value_counts()
               .sort("count", descending=True).rows())
    return IngestResult(
        bronze=bronze.drop("clipped"),
        quarantine=quarantine,
        files=files,
        rows_in=bronze.height + quarantine.height,
        clipped=int(bronze.get_column("clipped").sum()),
        reasons=dict(reasons),
        quarantine_share=bad_in_window / in_window_rows if in_window_rows else 0.0,
    )


def quarantine_predicate(result: IngestResult, start: dt.date, end: dt.date,
                         first_day: dt.date, end_date: dt.date | None) -> str:
    """The rows a window's quarantine write replaces: its dates, plus its files' orphan rows."""
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in result.files)
    orphan = f"date IS NULL OR date < '{first_day.isoformat()}'"
    if end_date is not None:
        orphan += f" OR date > '{end_date.isoformat()}'"
    return (f"(date >= '{start.isoformat()}' AND date < '{end.isoformat()}') OR "
            f"(source_file IN ({files}) AND ({orphan}))")


def rows_per_period(bronze: pl.DataFrame, start: dt.date, end: dt.date,
                    period_days: int) -> pl.DataFrame:
    """Rows landed in each period (partition) of [start, end), zeros included: a period without
    rows is a missing file or a missing day, which a window's total would hide."""
    periods = pl.date_range(start, end - dt.timedelta(days=1), f"{period_days}d", eager=True)
    counts = (bronze.select(((pl.col("date") - pl.lit(start)).dt.total_days() // period_days)
                            .alias("i")).group_by("i").len())
    return (pl.DataFrame({"period": periods}).with_row_index("i")
            .with_columns(pl.col("i").cast(pl.Int64))
            .join(counts.with_columns(pl.col("i").cast(pl.Int64)), on="i", how="left")
            .select("period", pl.col("len").fill_null(0).alias("rows")))
