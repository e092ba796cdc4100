"""`retail-ml`: the command line of the platform (simulate, demo)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

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
    """Simulates (when the dataset is the simulated world), runs `full_pipeline` over every
    partition in the real instance under RETAIL_ML_HOME and prints a summary."""
    from ml_assets.demo import run

    return run(load_settings(), os.environ.get("RETAIL_ML_DATASET", "simulated"))


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
