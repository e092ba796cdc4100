"""DeltaStore.overwrite: an upgrade that adds a column keeps the table writable."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from resources.delta import DeltaStore


def test_a_window_overwrite_with_a_new_column_keeps_the_other_windows(tmp_path: Path) -> None:
    delta = DeltaStore(root=str(tmp_path))
    delta.overwrite("gold/t", pl.DataFrame({"origin": ["a", "b"], "units": [1.0, 2.0]}))
    delta.overwrite("gold/t", pl.DataFrame({"origin": ["b"], "units": [3.0], "lower": [1.5]}),
                    predicate="origin = 'b'")
    got = delta.read("gold/t").sort("origin")
    assert got.to_dicts() == [{"origin": "a", "units": 1.0, "lower": None},
                              {"origin": "b", "units": 3.0, "lower": 1.5}]
