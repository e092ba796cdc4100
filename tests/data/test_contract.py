"""Contract tests of ingestion: each class of bad input lands in quarantine with its reason, file
and row number, nothing is lost or duplicated, and a broken delivery writes nothing.

Two levels: `ingest_window` (pure, no Dagster) for the value rules, and `ingest_job` /
`features_job` on a real Dagster instance with Delta tables in a temporary folder for what the
assets write. Landing files are small hand-made CSVs whose source columns differ from the
contract names, so the mapping is exercised too.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.definitions import build_definitions
from ml_assets.ingest.landing import ContractError
from ml_assets.ingest.pipeline import IngestResult, ingest_window
from resources import delta_files
from resources.delta import DeltaStore, date_window_predicate
from resources.settings import load_dataset, load_settings

START, END = dt.date(2024, 1, 1), dt.date(2024, 1, 7)  # the dataset's first and last day
TODAY = "2024-01-10"
HEADER = ["Date", "Store", "Item", "Units", "Price", "Promo"]
MAPPING = "{date: Date, store_id: Store, item_id: Item, units_sold: Units, price: Price, " \
          "on_promo: Promo}"
ACROSS = "duplicate key across files (a later delivery supersedes it)"
KEYS = ["date", "store_id", "item_id"]


# --- helpers -----------------------------------------------------------------------------------


def _days() -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range((END - START).days + 1)]


def _row(day: dt.date | str, store: str = "S1", item: str = "I1", units: str = "3",
         price: str = "1.99", promo: str = "0") -> list[str]:
    return [day if isinstance(day, str) else day.isoformat(), store, item, units, price, promo]


def _good_rows(stores: tuple[str, ...] = ("S1", "S2"),
               items: tuple[str, ...] = ("I1", "I2")) -> list[list[str]]:
    return [_row(d, s, i, units=str(n % 7)) for n, (d, s, i) in enumerate(
        (d, s, i) for d in _days() for s in stores for i in items)]


def _write(path: Path, rows: list[list[str]], header: list[str] = HEADER,
           delivered: int | None = None) -> Path:
    """A landing CSV; `delivered` sets its mtime (seconds after an epoch), i.e. delivery order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    if delivered is not None:
        os.utime(path, (1_700_000_000 + delivered, 1_700_000_000 + delivered))
    return path


def _count_rows(paths: list[Path]) -> int:
    """Data rows in the files, counted without polars or the code under test."""
    total = 0
    for path in paths:
        with path.open(newline="") as fh:
            total += sum(1 for _ in csv.reader(fh)) - 1
    return total


def _dataset(tmp_path: Path, extra: str = "", dims: bool = False) -> Path:
    if dims:
        _write(tmp_path / "dims" / "stores.csv", [["S1", "north"], ["S2", "south"]],
               header=["Store", "Region"])
        _write(tmp_path / "dims" / "items.csv", [["I1", "dairy"], ["I2", "bakery"]],
               header=["Item", "Category"])
        extra += ("stores: {path: dims/stores.csv, columns: {store_id: Store}}\n"
                  "items: {path: dims/items.csv, columns: {item_id: Item}}\n")
    path = tmp_path / "dataset.yaml"
    path.write_text(f"name: contract\nstart_date: {START}\nend_date: {END}\n"
                    f"sales:\n  path: landing/*.csv\n  columns: {MAPPING}\n{extra}")
    return path


def _ingest(tmp_path: Path, start: dt.date = START, end: dt.date = END,
            known_stores: list[str] | None = None,
            known_items: list[str] | None = None) -> IngestResult:
    """The pure pipeline over [start, end] (inclusive) with the dataset YAML in tmp_path."""
    ds = load_dataset(tmp_path / "dataset.yaml", tmp_path / "home")
    return ingest_window(ds, start, end + dt.timedelta(days=1), START,
                         None if known_stores is None else pl.Series(known_stores),
                         None if known_items is None else pl.Series(known_items))


class Platform:
    """The Definitions for the dataset YAML in tmp_path, run on one ephemeral instance."""

    def __init__(self, tmp_path: Path):
        env = {"RETAIL_ML_HOME": str(tmp_path / "home"),
               "RETAIL_ML_DATASET": str(tmp_path / "dataset.yaml"), "RETAIL_ML_TODAY": TODAY}
        self.settings = load_settings(env)
        self.defs = build_definitions(self.settings, env["RETAIL_ML_DATASET"])
        self.instance = dg.DagsterInstance.ephemeral()
        self.delta = DeltaStore(root=str(self.settings.delta_root))
        self.keys = self.defs.resolve_job_def("ingest_job").partitions_def.get_partition_keys()

    def run(self, job: str = "ingest_job",
            keys: list[str] | None = None) -> dg.ExecuteInProcessResult:
        keys = keys or self.keys
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": keys[0],
                  "dagster/asset_partition_range_end": keys[-1]})

    def tables(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        bronze = self.delta.read("bronze/sales").sort(KEYS)
        quarantine = self.delta.read("bronze/sales_quarantine").sort("source_file", "row_number")
        return bronze, quarantine


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    messages = [e.step_failure_data.error.message for e in result.get_step_failure_events()
                if e.step_failure_data.error is not None]
    return "\n".join(messages)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


# --- missing contract columns ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["Date", "Store", "Item", "Units"])
def test_missing_contract_column_names_the_file_and_column(tmp_path: Path, missing: str) -> None:
    _dataset(tmp_path)
    _write(tmp_path / "landing" / "good.csv", [_row(START)])
    header = [c if c != missing else "Something_else" for c in HEADER]
    bad = _write(tmp_path / "landing" / "bad.csv", [_row(START)], header=header)
    contract = {"Date": "date", "Store": "store_id", "Item": "item_id", "Units": "units_sold"}
    with pytest.raises(ContractError) as info:
        _ingest(tmp_path)
    message = str(info.value)
    assert f"{bad}: missing columns {contract[missing]} (source column '{missing}')" in message
    assert "good.csv" not in message


def test_missing_optional_columns_are_not_a_contract_error(tmp_path: Path) -> None:
    _dataset(tmp_path)
    _write(tmp_path / "landing" / "a.csv", [_row(START)[:4]], header=HEADER[:4])
    result = _ingest(tmp_path)
    assert result.bronze.select("units_sold", "price", "on_promo").rows() == [(3.0, None, 0)]
    assert result.quarantine.height == 0


def test_missing_column_fails_the_run_and_writes_nothing(tmp_path: Path) -> None:
    _dataset(tmp_path)
    _write(tmp_path / "landing" / "a_good.csv", _good_rows(), delivered=0)
    bad = _write(tmp_path / "landing" / "b_bad.csv", [_row(START)],
                 header=["Date", "Store", "Item", "Qty", "Price", "Promo"], delivered=10)
    platform = Platform(tmp_path)

    # a first delivery with a broken file: the run fails before any sales table exists
    result = platform.run()
    assert not result.success
    assert result.get_failed_step_keys() == {"sales"}
    message = _failure_message(result)
    assert str(bad) in message and "units_sold (source column 'Units')" in message
    assert not platform.delta.exists("bronze/sales")
    assert not platform.delta.exists("bronze/sales_quarantine")
    assert platform.instance.get_latest_materialization_event(dg.AssetKey("sales")) is None

    # once the good file alone is ingested, a broken one leaves both tables at their version
    bad.rename(bad.with_suffix(".held"))
    assert platform.run().success
    versions = {t: platform.delta.version(t) for t in ("bronze/sales", "bronze/sales_quarantine")}
    bronze, quarantine = platform.tables()
    assert bronze.height == len(_good_rows())
    bad.with_suffix(".held").rename(bad)
    result = platform.run()
    assert not result.success and str(bad) in _failure_message(result)
    assert {t: platform.delta.version(t) for t in versions} == versions
    after_bronze, after_quarantine = platform.tables()
    assert_frame_equal(after_bronze, bronze)
    assert_frame_equal(after_quarantine, quarantine)


# --- bad values: one class at a time ----------------------------------------------------------

BAD_VALUES = [
    pytest.param({"Date": "2024-02-30"}, "unparseable date", id="impossible-date"),
    pytest.param({"Date": "03/01/2024"}, "unparseable date", id="non-iso-date"),
    pytest.param({"Date": ""}, "null date", id="empty-date"),
    pytest.param({"Units": "abc"}, "units_sold not a number", id="units-abc"),
    pytest.param({"Units": ""}, "null units_sold", id="units-empty"),
    pytest.param({"Store": ""}, "null store_id", id="store-empty"),
    pytest.param({"Store": "   "}, "null store_id", id="store-blank"),
    pytest.param({"Item": ""}, "null item_id", id="item-empty"),
    pytest.param({"Units": "-2"}, "negative units_sold", id="negative-units"),
    pytest.param({"Price": "0"}, "price <= 0", id="price-zero"),
    pytest.param({"Price": "-1.5"}, "price <= 0", id="price-negative"),
    pytest.param({"Price": "1,99"}, "price not a number", id="price-comma"),
    pytest.param({"Promo": "2"}, "on_promo not 0/1", id="promo-2"),
    pytest.param({"Promo": "maybe"}, "on_promo not 0/1", id="promo-text"),
    pytest.param({"Store": "", "Units": "abc"}, "null store_id; units_sold not a number",
                 id="two-reasons"),
    pytest.param({"Units": "NaN"}, "units_sold not a number", id="units-nan"),
    pytest.param({"Units": "inf"}, "units_sold not a number", id="units-inf"),
    pytest.param({"Price": "nan"}, "price not a number", id="price-nan"),
]


@pytest.mark.parametrize(("change", "reason"), BAD_VALUES)
def test_bad_value_is_quarantined_with_reason_file_and_row(
        tmp_path: Path, change: dict[str, str], reason: str) -> None:
    _dataset(tmp_path)
    bad = dict(zip(HEADER, _row(START + dt.timedelta(days=1)), strict=True)) | change
    path = _write(tmp_path / "landing" / "sales.csv",
                  [_row(START), list(bad.values()), _row(START + dt.timedelta(days=2))])
    result = _ingest(tmp_path)
    assert result.quarantine.select("reason", "source_file", "row_number").rows() == [
        (reason, str(path), 2)]
    raw = json.loads(result.quarantine.get_column("raw").item())
    contract = {"Date": "date", "Store": "store_id", "Item": "item_id", "Units": "units_sold",
                "Price": "price", "Promo": "on_promo"}
    for source, value in change.items():
        assert raw[contract[source]] in (value, None)  # the value as delivered (empty = null)
    assert result.bronze.get_column("row_number").to_list() == [1, 3]
    assert result.rows_in == 3


def test_lenient_but_valid_values_reach_bronze(tmp_path: Path) -> None:
    _dataset(tmp_path)
    _write(tmp_path / "landing" / "sales.csv", [
        _row(START, units="3.0", promo="TRUE"),
        _row("2024-01-02T00:00:00", store=" S1 ", units=" 4 ", promo="yes"),
        _row(" 2024-01-03 ", item="I1", units="0", price="2", promo=" 0 "),
    ])
    result = _ingest(tmp_path)
    assert result.quarantine.height == 0
    assert result.bronze.select(*KEYS, "units_sold", "price", "on_promo").rows() == [
        (START, "S1", "I1", 3.0, 1.99, 1),
        (dt.date(2024, 1, 2), "S1", "I1", 4.0, 1.99, 1),
        (dt.date(2024, 1, 3), "S1", "I1", 0.0, 2.0, 0)]


def test_short_row_is_quarantined_not_dropped(tmp_path: Path) -> None:
    _dataset(tmp_path)
    path = tmp_path / "landing" / "sales.csv"
    path.parent.mkdir(parents=True)
    path.write_text(",".join(HEADER) + "\n" + ",".join(_row(START)) + "\n2024-01-02,S1,I1\n")
    result = _ingest(tmp_path)
    assert result.bronze.height == 1
    assert result.quarantine.select("reason", "source_file", "row_number").rows() == [
        ("null units_sold", str(path), 2)]


def test_row_with_extra_fields_is_a_contract_error_naming_the_file(tmp_path: Path) -> None:
    _dataset(tmp_path)
    path = tmp_path / "landing" / "ragged.csv"
    path.parent.mkdir(parents=True)
    path.write_text(",".join(HEADER) + "\n" + ",".join(_row(START)) + "\n"
                    + ",".join(_row(START + dt.timedelta(days=1))) + ",surplus\n")
    with pytest.raises(ContractError, match=re.escape(str(path))):
        _ingest(tmp_path)


# --- negative units: the three policies --------------------------------------------------------


@pytest.mark.parametrize(("policy", "bronze_units", "quarantined", "clipped"), [
    ("quarantine", [3.0], ["negative units_sold"], 0),
    ("clip", [3.0, 0.0], [], 1),
    ("keep", [3.0, -2.0], [], 0),
])
def test_negative_units_follow_the_policy(tmp_path: Path, policy: str, bronze_units: list[float],
                                          quarantined: list[str], clipped: int) -> None:
    _dataset(tmp_path, f"negative_units: {policy}\n")
    _write(tmp_path / "landing" / "sales.csv",
           [_row(START), _row(START + dt.timedelta(days=1), units="-2")])
    result = _ingest(tmp_path)
    assert result.bronze.get_column("units_sold").to_list() == bronze_units
    assert result.quarantine.get_column("reason").to_list() == quarantined
    assert result.quarantine.get_column("row_number").to_list() == [2] * len(quarantined)
    assert result.clipped == clipped


def test_clipped_counts_only_the_window(tmp_path: Path) -> None:
    _dataset(tmp_path, "negative_units: clip\n")
    _write(tmp_path / "landing" / "sales.csv",
           [_row(START, units="-1"), _row(END, units="-2")])
    result = _ingest(tmp_path, START, START)
    assert result.bronze.get_column("units_sold").to_list() == [0.0]
    assert result.clipped == 1


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_key_within_a_file_keeps_the_first(tmp_path: Path) -> None:
    _dataset(tmp_path)
    path = _write(tmp_path / "landing" / "sales.csv", [
        _row(START, units="1"), _row(START, item="I2", units="5"), _row(START, units="2"),
        _row(START, units="9")])
    result = _ingest(tmp_path)
    assert result.bronze.select("item_id", "units_sold", "row_number").rows() == [
        ("I1", 1.0, 1), ("I2", 5.0, 2)]
    assert result.quarantine.select("reason", "source_file", "row_number").rows() == [
        ("duplicate key within file", str(path), 3), ("duplicate key within file", str(path), 4)]


def test_duplicate_key_across_files_the_later_delivery_wins(tmp_path: Path) -> None:
    _dataset(tmp_path)
    # names sort the other way round: delivery time, not the name, decides
    first = _write(tmp_path / "landing" / "b_first.csv",
                   [_row(START, units="1"), _row(START, item="I2", units="5")], delivered=0)
    second = _write(tmp_path / "landing" / "a_second.csv", [_row(START, units="7")],
                    delivered=3600)
    result = _ingest(tmp_path)
    assert result.bronze.select("item_id", "units_sold", "source_file").rows() == [
        ("I1", 7.0, str(second)), ("I2", 5.0, str(first))]
    assert result.quarantine.select("reason", "source_file", "row_number").rows() == [
        (ACROSS, str(first), 1)]


def test_an_invalid_later_row_does_not_supersede_a_valid_one(tmp_path: Path) -> None:
    _dataset(tmp_path)
    first = _write(tmp_path / "landing" / "first.csv", [_row(START, units="1")], delivered=0)
    second = _write(tmp_path / "landing" / "second.csv", [_row(START, units="abc")],
                    delivered=60)
    result = _ingest(tmp_path)
    assert result.bronze.select("units_sold", "source_file").rows() == [(1.0, str(first))]
    assert result.quarantine.select("reason", "source_file").rows() == [
        ("units_sold not a number", str(second))]


# --- unknown ids and dates out of range --------------------------------------------------------


def test_unknown_store_and_item_are_quarantined(tmp_path: Path) -> None:
    _dataset(tmp_path)
    path = _write(tmp_path / "landing" / "sales.csv", [
        _row(START), _row(START, store="S9"), _row(START, item="I9"), _row(START, store="S2")])
    result = _ingest(tmp_path, known_stores=["S1", "S2"], known_items=["I1"])
    assert result.bronze.select("store_id", "item_id").rows() == [("S1", "I1"), ("S2", "I1")]
    assert result.quarantine.select("reason", "source_file", "row_number").rows() == [
        ("unknown store_id", str(path), 2), ("unknown item_id", str(path), 3)]


def test_dates_outside_the_dataset_are_quarantined_in_every_window(tmp_path: Path) -> None:
    _dataset(tmp_path)
    path = _write(tmp_path / "landing" / "sales.csv", [
        _row(START), _row("2023-12-31"), _row("2024-01-08"), _row(END)])
    expected = [("date before dataset start", str(path), 2),
                ("date after dataset end_date", str(path), 3)]
    for start, end, bronze_rows in [(START, END, 2), (START, START, 1), (END, END, 1)]:
        result = _ingest(tmp_path, start, end)
        assert result.bronze.height == bronze_rows
        assert result.quarantine.select("reason", "source_file", "row_number").rows() == expected


def test_covariate_reads_its_source_column(tmp_path: Path) -> None:
    _dataset(tmp_path, "covariates: [{name: is_open, column: Open}]\n")
    _write(tmp_path / "landing" / "sales.csv",
           [[*_row(START), "1"], [*_row(END), "0"]], header=[*HEADER, "Open"])
    result = _ingest(tmp_path)
    assert result.bronze.get_column("is_open").to_list() == [1.0, 0.0]


# --- through Dagster: a messy delivery ---------------------------------------------------------


def _messy_delivery(landing: Path) -> tuple[list[Path], dict[tuple[str, int], str], int]:
    """Two files with one row of every bad class; returns (files, expected quarantine as
    {(file, row_number): reason}, the value the second file delivers for its re-sent key)."""
    bad_rows = [
        (_row("2024-02-30"), "unparseable date"),
        (_row(START, units="abc"), "units_sold not a number"),
        (_row(START, store=""), "null store_id"),
        (_row(START, item="I2", units="-2"), "negative units_sold"),
        (_row(dt.date(2024, 1, 2), price="0"), "price <= 0"),
        (_row(dt.date(2024, 1, 3), promo="2"), "on_promo not 0/1"),
        (_row(dt.date(2024, 1, 4), store="S9"), "unknown store_id"),
        (_row(dt.date(2024, 1, 4), item="I9"), "unknown item_id"),
        (_row("2023-12-31"), "date before dataset start"),
        (_row("2024-01-08"), "date after dataset end_date"),
        (_row(dt.date(2024, 1, 5), store="S2", item="I2", units="99"),
         "duplicate key within file"),  # comes after the good row for the same key
    ]
    good = _good_rows()
    rows = good + [r for r, _ in bad_rows]
    first = _write(landing / "delivery_1.csv", rows, delivered=0)
    expected = {(str(first), len(good) + i + 1): reason for i, (_, reason) in enumerate(bad_rows)}
    resent = _row(END, units="42")
    second = _write(landing / "delivery_2.csv", [resent], delivered=3600)
    superseded = next(i for i, r in enumerate(good) if r[:3] == resent[:3])
    expected[(str(first), superseded + 1)] = ACROSS
    return [first, second], expected, 42


def test_messy_delivery_through_dagster_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    _dataset(tmp_path, "max_quarantine_share: 0.5\n", dims=True)
    files, expected, resent_units = _messy_delivery(tmp_path / "landing")
    platform = Platform(tmp_path)
    result = platform.run()
    assert result.success, _failure_message(result)
    assert _checks(result) == {"quarantine_share": True, "freshness": True, "landed": True}

    bronze, quarantine = platform.tables()
    # every row of the files is in bronze or in quarantine, exactly once
    assert bronze.height + quarantine.height == _count_rows(files)
    assert bronze.select(KEYS).is_duplicated().sum() == 0
    assert bronze.height == len(_good_rows())
    got = {(f, n): r for f, n, r in quarantine.select("source_file", "row_number", "reason").rows()}
    assert got == expected
    assert bronze.filter(pl.col("date") == END, pl.col("store_id") == "S1",
                         pl.col("item_id") == "I1").select("units_sold", "source_file").rows() \
        == [(float(resent_units), str(files[1]))]
    assert bronze.get_column("units_sold").min() >= 0
    metadata = platform.instance.get_latest_materialization_event(
        dg.AssetKey("sales")).asset_materialization.metadata
    assert metadata["rows_in"].value == _count_rows(files)
    assert metadata["rows_quarantined"].value == len(expected)

    # re-running the range, in two parts or one partition, replaces and never duplicates
    assert platform.run(keys=platform.keys[:3]).success
    assert platform.run(keys=platform.keys[3:]).success
    assert platform.run(keys=[platform.keys[4]]).success
    assert_frame_equal(platform.tables()[0], bronze)
    assert_frame_equal(platform.tables()[1], quarantine)

    # delivering the latest file again (same path, same rows, a later mtime) changes nothing
    _write(files[1], [_row(END, units=str(resent_units))], delivered=7200)
    version = platform.delta.version("bronze/sales")
    assert platform.run().success
    assert platform.delta.version("bronze/sales") > version
    assert_frame_equal(platform.tables()[0], bronze)
    assert_frame_equal(platform.tables()[1], quarantine)


def test_a_copy_under_a_new_name_keeps_each_key_once(tmp_path: Path) -> None:
    _dataset(tmp_path, "max_quarantine_share: 0.6\n")  # the copy's rows count as quarantined
    original = _write(tmp_path / "landing" / "sales_0101.csv", _good_rows(), delivered=0)
    platform = Platform(tmp_path)
    assert platform.run().success
    before, _ = platform.tables()

    copy = tmp_path / "landing" / "sales_0101 (1).csv"
    shutil.copyfile(original, copy)
    os.utime(copy, (1_700_003_600, 1_700_003_600))
    assert platform.run().success
    bronze, quarantine = platform.tables()
    assert_frame_equal(bronze.drop("source_file"), before.drop("source_file"))
    assert set(bronze.get_column("source_file")) == {str(copy)}
    assert quarantine.height == before.height
    assert set(quarantine.get_column("source_file")) == {str(original)}
    assert set(quarantine.get_column("reason")) == {ACROSS}
    assert bronze.height + quarantine.height == _count_rows([original, copy])


# --- the blocking quarantine_share check -------------------------------------------------------


def test_quarantine_share_above_the_limit_blocks_features(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, "max_quarantine_share: 0.1\n")
    good = _good_rows()
    bad = [_row(d, units="abc") for d in _days()]  # 7 of 35 rows: 20%
    _write(tmp_path / "landing" / "sales.csv", good + bad)
    platform = Platform(tmp_path)
    result = platform.run("features_job")
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["quarantine_share"].passed
    assert evaluations["quarantine_share"].metadata["share"].value == pytest.approx(0.2)
    assert evaluations["freshness"].passed
    assert "features" not in {e.step_key for e in result.get_step_success_events()}
    assert platform.instance.get_latest_materialization_event(dg.AssetKey("features")) is None
    assert not platform.delta.exists("silver/features")

    # the same delivery under a looser limit goes through to features
    dataset.write_text(dataset.read_text().replace("0.1", "0.25"))
    result = Platform(tmp_path).run("features_job")
    assert result.success
    assert platform.delta.read("silver/features").height == len(good)


# --- a crash mid-write leaves the previous table version -----------------------------------------


def _frame(days: list[dt.date], units: float) -> pl.DataFrame:
    return pl.DataFrame({"date": days, "store_id": ["S1"] * len(days),
                         "item_id": ["I1"] * len(days), "units_sold": [units] * len(days)})


def test_window_write_with_a_row_outside_raises_and_keeps_the_version(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "delta"))
    version = store.replace_window("bronze/sales", _frame(_days(), 1.0), "date", START,
                                   END + dt.timedelta(days=1), KEYS)
    before = store.read("bronze/sales").sort("date")
    day = dt.date(2024, 1, 3)
    frame = pl.concat([_frame([day], 5.0), _frame([dt.date(2024, 1, 6)], 5.0)])
    with pytest.raises(ValueError, match="outside"):
        store.replace_window("bronze/sales", frame, "date", day, day + dt.timedelta(days=1), KEYS)
    assert store.version("bronze/sales") == version
    assert_frame_equal(store.read("bronze/sales").sort("date"), before)

    # the predicate overwrite (the quarantine's write) refuses rows outside its predicate too
    store.overwrite("bronze/q", _frame(_days(), 1.0))
    q_version, q_before = store.version("bronze/q"), store.read("bronze/q").sort("date")
    with pytest.raises(Exception, match="(?i)invalid data|predicate"):
        store.overwrite("bronze/q", frame, date_window_predicate("date", day,
                                                                 day + dt.timedelta(days=1)))
    assert store.version("bronze/q") == q_version
    assert_frame_equal(store.read("bronze/q").sort("date"), q_before)


def test_a_crash_after_writing_files_before_the_commit_keeps_the_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeltaStore(root=str(tmp_path / "delta"))
    version = store.replace_window("bronze/sales", _frame(_days(), 1.0), "date", START,
                                   END + dt.timedelta(days=1), KEYS)
    before = store.read("bronze/sales").sort("date")
    folder = Path(store.uri("bronze/sales"))
    files_before = set(folder.glob("*.parquet"))
    write_files = delta_files._write_files

    def crash_after_writing(*args, **kwargs):
        write_files(*args, **kwargs)
        raise OSError("process killed before the commit")

    day = dt.date(2024, 1, 3)
    monkeypatch.setattr(delta_files, "_write_files", crash_after_writing)
    with pytest.raises(OSError, match="killed"):
        store.replace_window("bronze/sales", _frame([day], 9.0), "date", day,
                             day + dt.timedelta(days=1), KEYS)
    assert set(folder.glob("*.parquet")) > files_before  # data files were written...
    assert store.version("bronze/sales") == version  # ...but never committed
    assert_frame_equal(store.read("bronze/sales").sort("date"), before)

    monkeypatch.undo()  # the retry replaces the window once; the orphaned files stay invisible
    store.replace_window("bronze/sales", _frame([day], 9.0), "date", day,
                         day + dt.timedelta(days=1), KEYS)
    after = store.read("bronze/sales").sort("date")
    assert store.version("bronze/sales") == version + 1
    assert after.height == before.height
    assert after.filter(pl.col("date") == day).get_column("units_sold").to_list() == [9.0]
    assert after.filter(pl.col("date") != day).get_column("units_sold").unique().to_list() == [1.0]
