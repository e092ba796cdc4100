"""Conservation, as a property: every row of every generated delivery ends up exactly once in
bronze or in quarantine (by source_file + row_number), and every quarantined row says why.

Deliveries mix valid rows, short rows, garbage text, blank lines, huge numbers, NaN/inf, bad
dates, empty fields and duplicate keys within and across files, in UTF-8, UTF-8 with a BOM or
latin-1, with LF, CRLF or CR-only line endings. They go through the pure ingest functions
(`ingest_window`: list, check, read, validate, split), without Dagster, over the dataset's whole
range so that no row belongs to another window. Run with `-s` to see the row counts.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_assets.ingest.pipeline import ingest_window
from resources.settings import Covariate, DatasetConfig, FileSource

START, END = dt.date(2024, 1, 1), dt.date(2024, 1, 14)
HEADER = ["Date", "Store", "Item", "Units", "Price", "Promo", "Straße"]
COLUMNS = {"date": "Date", "store_id": "Store", "item_id": "Item", "units_sold": "Units",
           "price": "Price", "on_promo": "Promo"}
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1"]
NEWLINES = ["\n", "\r\n", "\r"]
SETTINGS = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# A sales row draws each field from its valid values, then spoils up to two of them.
GOOD = [
    st.dates(START, END).map(dt.date.isoformat),  # few dates: duplicate keys are common
    st.sampled_from(["S1", "S2", " S1 ", "Müller"]),
    st.sampled_from(["I1", "I2", "Ünïcode"]),
    st.one_of(st.integers(0, 40).map(str), st.sampled_from(["1e308", "9" * 40, " 4 ", "TRUE"])),
    st.one_of(st.just(""), st.floats(0.01, 1e300).map(str)),
    st.sampled_from(["0", "1", "", "yes", "FALSE"]),
]
BAD = [
    st.sampled_from(["", " ", "2024-02-30", "03/01/2024", "2024-1-7", "0000-00-00", "NaN",
                     "99999-01-01", "-2024-01-01", "2024-01", "2023-12-31", "2024-01-15"]),
    st.sampled_from(["", "  ", "S9"]),  # S9 is unknown where stores are known
    st.sampled_from(["", "\t", "i1"]),
    st.sampled_from(["-3", "", "nan", "-inf", "1e400", "-1e400", "abc", "1,5", "0x10", "1_000",
                     "-0.5"]),
    st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "abc", "1e400"]), st.floats().map(str)),
    st.sampled_from(["2", "maybe", "-1", "nan", "0.5"]),
]


@dataclass(frozen=True)
class File:
    columns: list[int]  # the file's header: HEADER's columns in its own order, some left out
    records: list[list[str]]  # fields in HEADER's order
    is_sales: list[bool]  # a sales row, else garbage
    encoding: str
    newline: str
    trailing_newline: bool


@st.composite
def sales_row(draw: st.DrawFn, latin1: bool) -> list[str]:
    row = [*(draw(field) for field in GOOD), draw(text(latin1))]
    for i in draw(st.lists(st.integers(0, len(BAD) - 1), max_size=2)):
        row[i] = draw(BAD[i])
    return row[:draw(st.sampled_from([len(row)] * 3 + [3, 4, 6]))]  # some rows are short


def text(latin1: bool) -> st.SearchStrategy[str]:
    chars = st.characters(max_codepoint=0xFF if latin1 else None, exclude_categories=["Cs"])
    return st.text(chars, max_size=12)


@st.composite
def sales_file(draw: st.DrawFn, max_rows: int, garbage_weight: int,
               earlier: list[File] | None = None) -> File:
    encoding = draw(st.sampled_from(ENCODINGS))
    latin1 = encoding == "latin-1"
    garbage = st.lists(text(latin1), max_size=len(HEADER))  # never more fields than the header
    kinds = st.sampled_from([True] * 3 + [False] * garbage_weight)
    records, is_sales = [], []
    for _ in range(draw(st.integers(1, max_rows))):
        is_sales.append(draw(kinds))
        records.append(draw(sales_row(latin1) if is_sales[-1] else garbage))
    if earlier and draw(st.booleans()):  # a re-delivery repeats rows of an earlier file
        old = draw(st.sampled_from(earlier))
        repeated = [(r, k) for r, k in zip(old.records, old.is_sales, strict=True)
                    if not latin1 or _latin1(r)]
        picked = draw(st.lists(st.sampled_from(repeated), max_size=10)) if repeated else []
        records += [r for r, _ in picked]
        is_sales += [k for _, k in picked]
    optional = draw(st.lists(st.sampled_from([4, 5, 6]), unique=True))  # price, promo, street
    columns = draw(st.permutations([0, 1, 2, 3, *optional]))
    return File(columns, records, is_sales, encoding, draw(st.sampled_from(NEWLINES)),
                draw(st.booleans()))


def _latin1(record: list[str]) -> bool:
    return all(ord(c) <= 0xFF for field in record for c in field)


def _line(record: list[str], sep: str) -> str:
    special = (sep, '"', "\r", "\n")
    return sep.join('"' + v.replace('"', '""') + '"' if any(s in v for s in special) else v
                    for v in record)


def _write(path: Path, file: File, sep: str) -> None:
    # a short sales row lacks its last fields, whatever the file's column order; garbage is
    # written as it is, never with more fields than the header (that is a contract error)
    rows = [[r[i] for i in file.columns if i < len(r)] if sales else r
            for r, sales in zip(file.records, file.is_sales, strict=True)]
    lines = [_line([HEADER[i] for i in file.columns], sep),
             *(_line(r[:len(file.columns)], sep) for r in rows)]
    # a blank last line is a row only if a line break ends it
    end = file.newline if file.trailing_newline or lines[-1] == "" else ""
    path.write_bytes((file.newline.join(lines) + end).encode(file.encoding))


@st.composite
def delivery(draw: st.DrawFn, max_files: int, max_rows: int,
             garbage_weight: int) -> tuple[list[File], dict[str, object]]:
    files: list[File] = []
    for _ in range(draw(st.integers(1, max_files))):
        files.append(draw(sales_file(max_rows, garbage_weight, files)))
    config = {
        "frequency": draw(st.sampled_from(["daily", "weekly"])),
        "negative_units": draw(st.sampled_from(["quarantine", "clip", "keep"])),
        "separator": draw(st.sampled_from([",", ";"])),
        "known_stores": draw(st.sampled_from([None, ["S1", "S2", "Müller"]])),
        "known_items": draw(st.sampled_from([None, ["I1", "I2", "Ünïcode"]])),
    }
    return files, config


def check_conservation(files: list[File], config: dict[str, object]) -> Counter[str]:
    """Writes the delivery, ingests it and checks that every row is accounted for once."""
    with tempfile.TemporaryDirectory() as tmp:
        sep = str(config["separator"])
        paths = [Path(tmp) / f"sales_{i}.csv" for i in range(len(files))]
        for path, file in zip(paths, files, strict=True):
            _write(path, file, sep)
        ds = DatasetConfig(
            name="conservation", start_date=START, end_date=END,
            frequency=config["frequency"], negative_units=config["negative_units"],  # type: ignore[arg-type]
            covariates=[Covariate(name="street", column="Straße", type="categorical")],
            sales=FileSource(path=str(Path(tmp) / "*.csv"), columns=COLUMNS, separator=sep))
        known = [None if v is None else pl.Series(v)
                 for v in (config["known_stores"], config["known_items"])]
        result = ingest_window(ds, START, END + dt.timedelta(days=1), START, *known)

    expected = pl.DataFrame(
        [(str(p), n) for p, f in zip(paths, files, strict=True)
         for n in range(1, len(f.records) + 1)],
        schema={"source_file": pl.Utf8, "row_number": pl.Int64}, orient="row")
    landed = pl.concat([result.bronze.select("source_file", "row_number"),
                        result.quarantine.select("source_file", "row_number")])
    twice = landed.filter(landed.is_duplicated())
    assert twice.is_empty(), f"rows in bronze and quarantine, or twice in one:\n{twice}"
    lost = expected.join(landed, on=["source_file", "row_number"], how="anti")
    extra = landed.join(expected, on=["source_file", "row_number"], how="anti")
    assert lost.is_empty(), f"rows in neither bronze nor quarantine:\n{lost}"
    assert extra.is_empty(), f"rows that were never delivered:\n{extra}"
    reasons = result.quarantine.get_column("reason")
    assert reasons.null_count() == 0 and (reasons.str.strip_chars() != "").all()
    assert not result.bronze.select("date", "store_id", "item_id").is_duplicated().any()
    assert result.rows_in == expected.height

    # a row that reached bronze kept its ids: nothing was mis-decoded or shifted
    by_row = {(str(p), n): r for p, f in zip(paths, files, strict=True)
              for n, (r, sales) in enumerate(zip(f.records, f.is_sales, strict=True), 1)
              if sales and len(r) == len(HEADER)}
    for file_name, row, store, item in result.bronze.select(
            "source_file", "row_number", "store_id", "item_id").iter_rows():
        if (file_name, row) in by_row:
            assert (store, item) == (by_row[file_name, row][1].strip(),
                                     by_row[file_name, row][2].strip())
    return Counter(examples=1, files=len(files), rows=expected.height,
                   bronze=result.bronze.height, quarantined=result.quarantine.height)


TOTALS: Counter[str] = Counter()


def _run(strategy: st.SearchStrategy[tuple[list[File], dict[str, object]]],
         examples: int) -> Counter[str]:
    counts: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=examples)
    @given(strategy)
    def prop(case: tuple[list[File], dict[str, object]]) -> None:
        counts.update(check_conservation(*case))

    prop()
    TOTALS.update(counts)
    print(f"\nthis test: {dict(counts)}\nso far: {dict(TOTALS)}")
    return counts


def test_multi_file_deliveries_land_every_row_once() -> None:
    counts = _run(delivery(max_files=3, max_rows=20, garbage_weight=1), examples=500)
    assert counts["files"] >= 500
    assert counts["rows"] == counts["bronze"] + counts["quarantined"]
    assert counts["bronze"] > 0 and counts["quarantined"] > 0


def test_garbage_heavy_files_land_every_row_once() -> None:
    counts = _run(delivery(max_files=1, max_rows=40, garbage_weight=6), examples=500)
    assert counts["files"] >= 500
    assert counts["rows"] == counts["bronze"] + counts["quarantined"]
