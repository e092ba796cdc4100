"""`retail-ml`: the command line of the platform (simulate, demo)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

from resources.settings import load_settings

SCENARIO_KINDS = ("level_shift", "price_shock", "promo_regime")


def _scenario(text: str) -> tuple[str, float]:
    kind, _, magnitude = text.partition(":")
    if kind not in SCENARIO_KINDS:
        raise argparse.ArgumentTypeError(f"scenario must be one of {SCENARIO_KINDS}")
    return kind, float(magnitude or 1.3)


def simulate(args: argparse.Namespace) -> int:
    from ml_assets.simulation.landing import land

    settings = load_settings()
    yesterday = settings.today - dt.timedelta(days=1)
    until = None if args.history else (dt.date.fromisoformat(args.until) if args.until
                                       else yesterday)
    written = land(settings, until=until, days=args.days, scenario=args.scenario)
    if written:
        print(f"landed {len(written)} day file(s): {written[0].name} .. {written[-1].name} "
              f"in {written[0].parent}")
    else:
        print("nothing to land: the landing zone is already up to date")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Materializes the graph in the real instance under RETAIL_ML_HOME, for every partition.
    With the simulated world, it first lands the history and every day up to yesterday."""
    import dagster as dg

    from ml_assets.definitions import build_definitions
    from ml_assets.simulation.landing import land, landed_days

    settings = load_settings()
    dagster_home = os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    os.makedirs(dagster_home, exist_ok=True)
    started = time.monotonic()
    if settings.dataset.simulation is not None:
        if not landed_days(settings):
            land(settings)  # the history
        land(settings, until=settings.today - dt.timedelta(days=1))
    defs = build_definitions(settings, os.environ.get("RETAIL_ML_DATASET", "simulated"))
    job = defs.resolve_job_def("features_job")
    keys = job.partitions_def.get_partition_keys()  # type: ignore[union-attr]
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0],
                  "dagster/asset_partition_range_end": keys[-1],
                  "retail_ml/trigger": "make demo"},
        )
    print(summary(defs, settings, result, time.monotonic() - started))
    return 0 if result.success else 1


def summary(defs, settings, result, seconds: float) -> str:  # noqa: ANN001
    delta = defs.resources["delta"]
    counts = {t: delta.scan(t).select("date").collect().height
              for t in ("bronze/sales", "bronze/sales_quarantine", "silver/features")
              if delta.exists(t)}
    lines = [f"retail-ml demo: {'succeeded' if result.success else 'FAILED'} "
             f"in {seconds:.0f} s (run {result.run_id})",
             f"  RETAIL_ML_HOME  {settings.home}"]
    lines += [f"  {table:<26}{rows:>10,} rows, Delta v{delta.version(table)}"
              for table, rows in counts.items()]
    lines += ["next: make dev   (Dagster UI on http://127.0.0.1:3000)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retail-ml")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="land simulated days in the landing zone")
    sim.add_argument("--history", action="store_true", help="land only the simulated history")
    sim.add_argument("--until", help="land up to this date (default: yesterday)")
    sim.add_argument("--days", type=int, help="land this many days after the last landed one")
    sim.add_argument("--scenario", type=_scenario,
                     help="start a drift scenario on the first landed day, e.g. level_shift:1.4")
    sim.set_defaults(func=simulate)
    sub.add_parser("demo", help="simulate and materialize the graph").set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
