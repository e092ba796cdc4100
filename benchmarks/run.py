"""`make bench`: runs every benchmark; each writes its report under benchmarks/results/.

    python -m benchmarks.run                  # all, at full scale
    python -m benchmarks.run --quick          # all, at smoke-test scale (reports in results/quick)
    python -m benchmarks.run --only features

A benchmark is a name, a one-line description and a function taking `quick` that runs it and
returns its result (with the report paths under "reports" and a one-line "headline").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import (
    accuracy_bench,
    dagster_bench,
    drift_bench,
    engines_bench,
    features_bench,
    m5_bench,
    serving_bench,
)


@dataclass(frozen=True)
class Benchmark:
    description: str
    run: Callable[[bool], dict[str, Any]]


def _features(small: bool) -> dict[str, Any]:
    quick = ["--series", "200", "--days", "400", "--out", str(features_bench.RESULTS / "quick")]
    result = features_bench.main(quick if small else [])
    assert result is not None
    polars = result["summary"]["polars"]
    headline = (f"{polars['rows']:,} rows, {polars['rows_per_s'] / 1e6:.2f}M rows/s end to end "
                f"warm, {polars['cold_rows_per_s'] / 1e6:.2f}M cold")
    if result.get("speedup"):
        headline += f", {result['speedup']['warm']:.1f}x pandas"
    if result.get("parity") is not None:
        headline += ", outputs equal" if result["parity"]["equal"] else ", OUTPUTS DIFFER"
    return {**result, "headline": headline}


def _engines(small: bool) -> dict[str, Any]:
    quick = ["--series", "60", "--days", "400", "--repeats", "1", "--shuffle-partitions", "2",
             "--driver-memory", "1g", "--out", str(features_bench.RESULTS / "quick")]
    result = engines_bench.main(quick if small else [])
    assert result is not None
    ratio = result["ratios"]
    headline = ", ".join(f"{name} {r['warm']:.1f}x polars' time warm" for name, r in
                         ratio.items())
    if result["parity"] is not None:
        headline += ", outputs equal" if result["parity"]["equal"] else ", OUTPUTS DIFFER"
    return {**result, "headline": headline}


def _m5(small: bool) -> dict[str, Any]:
    quick = ["--series", "300", "--days", "400", "--chunks", "100", "--check",
             "--out", str(features_bench.RESULTS / "quick")]
    result = m5_bench.main(quick if small else ["--chunks", "2000"])
    assert result is not None
    best = min(result["runs"], key=lambda r: r["s"])
    headline = (f"{best['rows']:,} rows in {best['s']:.1f} s ({best['rows_per_s'] / 1e6:.2f}M "
                f"rows/s), peak RSS {best['peak_rss_gb']:.1f} GB, {best['series_per_chunk']:,} "
                "series per chunk")
    out = features_bench.RESULTS / ("quick" if small else "")
    return {**result, "headline": headline, "reports": [str(out / "m5.md")]}


def _serving(small: bool) -> dict[str, Any]:
    # headline and reports come with the result; quick mode writes to results/quick
    return serving_bench.main(["--quick"] if small else [])


BENCHMARKS: dict[str, Benchmark] = {
    "features": Benchmark("bronze Delta → full feature set → feature Delta, polars vs pandas",
                          _features),
    "engines": Benchmark("the same feature run on polars, Spark local[2] and pandas, outputs "
                         "compared", _engines),
    "m5": Benchmark("polars features at M5 scale (30k series, 61.7M rows), chunked by series",
                    _m5),
    "serving": Benchmark("POST /forecast and /forecast_batch under `bentoml serve` vs a raw "
                         "ASGI app, with tuning variants", _serving),
    "drift": Benchmark("drift statistics, 1M x 1M rows x 30 features, vs scipy/pandas per column",
                       lambda small: drift_bench.main(["--quick"] if small else [])),
    "dagster": Benchmark("Dagster's bookkeeping in one run over every daily partition "
                         "(942), in memory, sqlite and Postgres",
                         lambda small: dagster_bench.main(["--quick"] if small else [])),
    "accuracy": Benchmark("backtest accuracy on the same windows: the platform vs mlforecast + "
                          "LightGBM, seasonal naive and the moving average, four datasets",
                          lambda small: accuracy_bench.main(["--quick"] if small else [])),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                        help="run just this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smoke-test scale")
    args = parser.parse_args(argv)
    failed = False
    done: list[tuple[str, dict[str, Any], float]] = []
    for name in args.only or list(BENCHMARKS):
        print(f"== {name}: {BENCHMARKS[name].description}", flush=True)
        started = time.perf_counter()
        result = BENCHMARKS[name].run(args.quick)
        done.append((name, result, time.perf_counter() - started))
        failed |= result.get("parity") is not None and not result["parity"]["equal"]
        failed |= bool(result.get("errors"))  # a dataset the accuracy benchmark could not run
    print("\nReports:")
    for name, result, seconds in done:
        print(f"  {name} ({seconds:.0f} s): {result['headline']}")
        for path in result["reports"]:
            print(f"    {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
