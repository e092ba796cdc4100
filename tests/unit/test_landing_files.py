"""Landing files as real public datasets ship them: CR-only, CRLF, a UTF-8 BOM, latin-1 text;
and deliveries that parse to nothing fail naming the file instead of landing zero rows."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from ml_assets.ingest.landing import ContractError, read_dimension, read_raw
from ml_assets.ingest.pipeline import ingest_window
from ml_assets.ingest.plan import ingest_plan
from ml_assets.ingest.validate import raw_columns
from resources.settings import DatasetConfig, FileSource

SALES_COLUMNS = {"date": "Date", "store_id": "Store", "item_id": "Item", "units_sold": "Units"}
ROWS = [("2024-01-01", "Müller", "I1", "3"), ("2024-01-02", "Café", "I2", "0"),
        ("2024-01-03", "S3", "I1", "7")]


def _write(path: Path, lines: list[str], newline: str = "\n", encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def _sales(tmp_path: Path, **extra: object) -> DatasetConfig:
    return DatasetConfig(name="landing", start_date=dt.date(2024, 1, 1),
                         end_date=dt.date(2024, 1, 7), **extra,  # type: ignore[arg-type]
                         sales=FileSource(path=str(tmp_path / "landing" / "*.csv"),
                                          columns=SALES_COLUMNS))


def test_walmart_cr_only_stores_file_reads_every_row(tmp_path: Path) -> None:
    # Kaggle's Walmart stores.csv: old-Mac line endings, read by polars alone as 0 rows and
    # 93 columns named like 'Size\r1'
    rows = [f"{n},{'ABC'[n % 3]},{100_000 + n * 1_000}" for n in range(1, 46)]
    path = _write(tmp_path / "stores.csv", ["Store,Type,Size", *rows], newline="\r")
    stores = read_dimension(FileSource(path=str(path), columns={"store_id": "Store"}), "store_id")
    assert stores.shape == (45, 3)
    assert stores.columns == ["store_id", "Type", "Size"]
    assert stores.row(0) == (1, "B", 101_000)
    assert stores.row(44) == (45, "A", 145_000)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1"])
def test_sales_file_reads_the_same_whatever_its_endings_and_encoding(
        tmp_path: Path, newline: str, encoding: str) -> None:
    path = _write(tmp_path / "sales.csv", ["Date,Store,Item,Units", *map(",".join, ROWS)],
                  newline=newline, encoding=encoding)
    frame = read_raw(path, FileSource(path=str(path)), SALES_COLUMNS)
    assert frame.select("date", "store_id", "item_id", "units_sold").rows() == ROWS
    assert frame.get_column("row_number").to_list() == [1, 2, 3]
    assert frame.get_column("source_file").unique().to_list() == [str(path)]


def test_latin1_text_past_the_sniffed_head_is_decoded_too(tmp_path: Path) -> None:
    # the first 64 KB are plain ASCII: polars starts on the fast path and reports the bad UTF-8
    ascii_rows = [f"2024-01-01,S{n},I1,1" for n in range(5_000)]
    path = _write(tmp_path / "sales.csv", ["Date,Store,Item,Units", *ascii_rows,
                                           "2024-01-02,Müller,I1,2"], encoding="latin-1")
    assert path.stat().st_size > 64 * 1024
    frame = read_raw(path, FileSource(path=str(path)), SALES_COLUMNS)
    assert frame.height == 5_001
    assert frame.row(-1, named=True)["store_id"] == "Müller"
    assert frame.get_column("row_number").to_list() == list(range(1, 5_002))


def test_cr_only_sales_go_through_ingest(tmp_path: Path) -> None:
    ds = _sales(tmp_path)
    _write(tmp_path / "landing" / "sales.csv",
           ["Date,Store,Item,Units", *map(",".join, ROWS), "2024-01-04,S3,I1,abc"], newline="\r")
    result = ingest_window(ds, dt.date(2024, 1, 1), dt.date(2024, 1, 8), dt.date(2024, 1, 1))
    assert result.bronze.select("store_id", "units_sold").rows() == [
        ("Müller", 3.0), ("Café", 0.0), ("S3", 7.0)]
    assert result.quarantine.select("row_number", "reason").rows() == [
        (4, "units_sold not a number")]


@pytest.mark.parametrize("content", [b"Date,Store,Item,Units\n", b"Date,Store,Item,Units", b""],
                         ids=["header-only", "header-no-newline", "zero-bytes"])
def test_sales_file_without_rows_fails_naming_the_file(tmp_path: Path, content: bytes) -> None:
    ds = _sales(tmp_path)
    _write(tmp_path / "landing" / "a_good.csv", ["Date,Store,Item,Units", ",".join(ROWS[0])])
    empty = tmp_path / "landing" / "b_empty.csv"
    empty.write_bytes(content)
    with pytest.raises(ContractError) as info:
        ingest_window(ds, dt.date(2024, 1, 1), dt.date(2024, 1, 8), dt.date(2024, 1, 1))
    message = str(info.value)
    assert (f"{empty}: no data rows (expected a header with 'Date', 'Store', 'Item', 'Units' "
            "and at least one row under it)") in message
    assert "a_good.csv" not in message


def test_dimension_file_without_rows_or_key_fails_naming_the_file(tmp_path: Path) -> None:
    empty = _write(tmp_path / "dims" / "a.csv", ["Store,Type"])
    keyless = _write(tmp_path / "dims" / "b.csv", ["Shop,Type", "1,A"])
    with pytest.raises(ContractError) as info:
        read_dimension(FileSource(path=str(tmp_path / "dims" / "*.csv"),
                                  columns={"store_id": "Store"}), "store_id")
    message = str(info.value)
    assert f"{empty}: no data rows (expected a header with 'Store'" in message
    assert f"{keyless}: missing columns store_id (source column 'Store')" in message


def test_plan_file_without_rows_fails_naming_the_file(tmp_path: Path) -> None:
    plan = FileSource(path=str(tmp_path / "plan" / "*.csv"), columns={"date": "Day"})
    ds = _sales(tmp_path, plan=plan)
    empty = _write(tmp_path / "plan" / "plan_2024-01-07.csv", ["Day,Store,Promo"], newline="\r")
    with pytest.raises(ContractError, match=re.escape(f"{empty}: no data rows")):
        ingest_plan(ds, dt.date(2024, 1, 1))


def test_an_optional_source_without_files_is_still_empty_not_an_error(tmp_path: Path) -> None:
    plan = FileSource(path=str(tmp_path / "plan" / "*.csv"))
    result = ingest_plan(_sales(tmp_path, plan=plan), dt.date(2024, 1, 1))
    assert result.files == [] and result.bronze.is_empty() and result.rows_in == 0


def test_raw_columns_of_a_cr_only_file_with_a_bom_are_the_mapped_names(tmp_path: Path) -> None:
    ds = _sales(tmp_path)
    path = _write(tmp_path / "sales.csv", ["Date,Store,Item,Units,Price", "2024-01-01,S1,I1,1,"],
                  newline="\r", encoding="utf-8-sig")
    frame = read_raw(path, ds.sales, raw_columns(ds))
    assert frame.row(0, named=True) | {"source_file": None} == {
        "date": "2024-01-01", "store_id": "S1", "item_id": "I1", "units_sold": "1",
        "price": None, "on_promo": None, "source_file": None, "row_number": 1}
    assert frame.schema["row_number"] == pl.Int64
