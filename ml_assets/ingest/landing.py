"""Reading landing files as the contract sees them: every value a string, nothing dropped."""

from __future__ import annotations

import codecs
import datetime as dt
import glob
import re
from pathlib import Path
from typing import Any

import polars as pl

from resources.settings import FileSource

_SNIFF_BYTES = 64 * 1024
_FIRST_BREAK = re.compile(rb"\r\n|\r|\n")


class ContractError(ValueError):
    """The delivery cannot be read at all (missing columns, no rows, unreadable file)."""


def list_files(source: FileSource) -> list[Path]:
    """Files matching the glob, oldest delivery first (mtime, then name), so later ones win."""
    paths = [Path(p) for p in glob.glob(source.path, recursive=True)]
    return sorted((p for p in paths if p.is_file()), key=lambda p: (p.stat().st_mtime_ns, p.name))


def read_csv(path: Path, **kwargs: Any) -> pl.DataFrame:
    """`pl.read_csv` for real deliveries: CR-only line endings and latin-1 text too.

    A UTF-8 file with LF or CRLF endings, with or without a BOM (polars handles those), is read
    straight from its path: files run to tens of millions of rows. Only a file that needs it is
    decoded and re-encoded in memory.
    """
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    first_break = _FIRST_BREAK.search(head)
    cr_only = first_break is not None and first_break.group() == b"\r"
    if not cr_only and _is_utf8(head):
        try:
            return pl.read_csv(path, **kwargs)
        except pl.exceptions.ComputeError as exc:
            if "utf-8" not in str(exc):  # non-UTF-8 text past the sniffed head falls through
                raise
    return pl.read_csv(_utf8_lf(path.read_bytes(), cr_only), **kwargs)


def _is_utf8(head: bytes) -> bool:
    try:  # incremental: a character cut at the end of the head is not an error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _utf8_lf(raw: bytes, cr_only: bool) -> bytes:
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # maps every byte, so it cannot fail
    if cr_only:  # polars reads a lone CR as data, so old Mac files become one header line
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.encode()


def _head(path: Path, source: FileSource) -> pl.DataFrame:
    """The header and at most one data row: enough to tell missing columns and empty files."""
    if source.file_format(path) == "parquet":
        return pl.scan_parquet(path).head(1).collect()
    return read_csv(path, n_rows=1, infer_schema=False, separator=source.separator,
                    raise_if_empty=False)


def check_columns(paths: list[Path], source: FileSource, required: list[str]) -> None:
    """Fails before anything is written, naming every file that lacks a contract column or
    holds no data row (a misread delivery looks like that), with the columns expected."""
    expected = {c: source.source_column(c) for c in required if c not in source.constants}
    problems = []
    for path in paths:
        try:
            head = _head(path, source)
        except Exception as exc:  # an unreadable file is a contract error with its name on it
            problems.append(f"{path}: cannot read the header ({exc})")
            continue
        missing = [f"{c} (source column '{src}')" for c, src in expected.items()
                   if src not in head.columns]
        if missing:
            problems.append(f"{path}: missing columns {', '.join(missing)}")
        if head.is_empty():
            columns = ", ".join(f"'{src}'" for src in expected.values())
            problems.append(f"{path}: no data rows (expected a header with {columns} and "
                            f"at least one row under it)")
    if problems:
        raise ContractError("Landing files break the contract:\n" + "\n".join(problems))


def read_raw(path: Path, source: FileSource, wanted: dict[str, str]) -> pl.DataFrame:
    """One file mapped to contract names, as strings, with its file name and 1-based row number.

    `wanted` maps contract names to source columns. Reading as strings means a bad value becomes
    a quarantine reason instead of a crash.
    """
    rename = {src: c for c, src in wanted.items() if c not in source.constants}
    try:
        present = set(_head(path, source).columns)
        columns = [s for s in rename if s in present]
        if source.file_format(path) == "parquet":
            frame = pl.read_parquet(path, columns=columns).with_columns(pl.all().cast(pl.Utf8))
        else:
            frame = read_csv(path, columns=columns, infer_schema=False,
                             separator=source.separator)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ContractError(f"{path}: cannot be read as {source.file_format(path)}: {exc}") \
            from exc
    frame = frame.rename({s: c for s, c in rename.items() if s in frame.columns})
    missing_optional = [c for c in rename.values() if c not in frame.columns]
    return frame.with_columns(
        *[pl.lit(v, pl.Utf8).alias(c) for c, v in source.constants.items()],
        *[pl.lit(None, pl.Utf8).alias(c) for c in missing_optional],
    ).select(  # one column order for every file, so that a delivery's files stack
        *wanted,
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
    check_columns(paths, source, [key])
    frames = []
    for path in paths:
        if source.file_format(path) == "parquet":
            frame = pl.read_parquet(path)
        else:
            frame = read_csv(path, separator=source.separator, infer_schema_length=10_000,
                             try_parse_dates=True)
        frames.append(frame.rename({source.source_column(key): key}))
    return pl.concat(frames, how="diagonal_relaxed")
