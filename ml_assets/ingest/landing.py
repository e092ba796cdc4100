"""Reading landing files as the contract sees them: every value a string, nothing dropped."""

from __future__ import annotations

import datetime as dt
import glob
from pathlib import Path

import polars as pl

from resources.settings import FileSource


class ContractError(ValueError):
    """The delivery cannot be read at all (missing columns, unreadable file)."""


def list_files(source: FileSource) -> list[Path]:
    """Files matching the glob, oldest delivery first (mtime, then name), so later ones win."""
    paths = [Path(p) for p in glob.glob(source.path, recursive=True)]
    return sorted((p for p in paths if p.is_file()), key=lambda p: (p.stat().st_mtime_ns, p.name))


def _header(path: Path, source: FileSource) -> list[str]:
    if source.file_format(path) == "parquet":
        return list(pl.read_parquet_schema(path))
    return pl.read_csv(path, n_rows=0, separator=source.separator).columns


def check_columns(paths: list[Path], source: FileSource, required: list[str]) -> None:
    """Fails before anything is written, naming every file and the contract columns it lacks."""
    problems = []
    for path in paths:
        try:
            header = set(_header(path, source))
        except Exception as exc:  # an unreadable file is a contract error with its name on it
            problems.append(f"{path}: cannot read the header ({exc})")
            continue
        missing = [f"{c} (source column '{source.source_column(c)}')" for c in required
                   if c not in source.constants and source.source_column(c) not in header]
        if missing:
            problems.append(f"{path}: missing columns {', '.join(missing)}")
    if problems:
        raise ContractError("Landing files break the contract:\n" + "\n".join(problems))


def read_raw(path: Path, source: FileSource, wanted: dict[str, str]) -> pl.DataFrame:
    """One file mapped to contract names, as strings, with its file name and 1-based row number.

    `wanted` maps contract names to source columns. Reading as strings means a bad value becomes
    a quarantine reason instead of a crash.
    """
    rename = {src: c for c, src in wanted.items() if c not in source.constants}
    try:
        present = set(_header(path, source))
        columns = [s for s in rename if s in present]
        if source.file_format(path) == "parquet":
            frame = pl.read_parquet(path, columns=columns).with_columns(pl.all().cast(pl.Utf8))
        else:
            frame = pl.read_csv(path, columns=columns, infer_schema=False,
                                separator=source.separator)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ContractError(f"{path}: cannot be read as {source.file_format(path)}: {exc}") \
            from exc
    frame = frame.rename({s: c for s, c in rename.items() if s in frame.columns})
    missing_optional = [c for c in rename.values() if c not in frame.columns]
    return frame.with_columns(
        *[pl.lit(v, pl.Utf8).alias(c) for c, v in source.constants.items()],
        *[pl.lit(None, pl.Utf8).alias(c) for c in missing_optional],
        pl.lit(str(path)).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"),
    )


def date_span(paths: list[Path], source: FileSource) -> tuple[dt.date, dt.date] | None:
    """Earliest and latest parseable date across the files (bad dates are ingest's job)."""
    if not paths:
        return None
    wanted = {"date": source.source_column("date")}
    dates = pl.concat([read_raw(p, source, wanted).get_column("date") for p in paths])
    parsed = dates.str.strip_chars().str.slice(0, 10).str.to_date(strict=False).drop_nulls()
    if parsed.is_empty():
        return None
    return parsed.min(), parsed.max()  # type: ignore[return-value]


def read_dimension(source: FileSource, key: str) -> pl.DataFrame:
    """A store/item/calendar attribute file: the key renamed to its contract name, other columns
    kept with their own names."""
    paths = list_files(source)
    if not paths:
        raise ContractError(f"No file matches {source.path}")
    frames = []
    for path in paths:
        if source.file_format(path) == "parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, separator=source.separator, infer_schema_length=10_000,
                                try_parse_dates=True)
        src = source.source_column(key)
        if src not in frame.columns:
            raise ContractError(f"{path}: missing key column '{src}' for {key}")
        frames.append(frame.rename({src: key}))
    return pl.concat(frames, how="diagonal_relaxed")
