"""`retail-ml`: the command line of the platform (simulate, demo, rollback, reproduce,
complete-journey, port-free)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import sys

from resources.settings import load_settings

SCENARIO_KINDS = ("level_shift", "price_shock", "promo_regime", "plan_miss")


def _scenario(text: str) -> tuple[str, float]:
    from ml_assets.simulation.world import Scenario, check_scenario

    kind, _, magnitude = text.partition(":")
    if kind not in SCENARIO_KINDS:
        raise argparse.ArgumentTypeError(f"scenario must be one of {SCENARIO_KINDS}")
    # plan_miss takes a share of promotions; the others a multiplier
    value = float(magnitude or (0.5 if kind == "plan_miss" else 1.3))
    try:
        check_scenario(Scenario(kind, dt.date.min, value))  # type: ignore[arg-type]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return kind, value


def simulate(args: argparse.Namespace) -> int:
    from ml_assets.simulation.clock import reload_code_location
    from ml_assets.simulation.landing import land

    settings = load_settings()
    yesterday = settings.today - dt.timedelta(days=1)
    until = None if args.history else (dt.date.fromisoformat(args.until) if args.until
                                       else yesterday)
    written = land(settings, until=until, days=args.days, scenario=args.scenario)
    if not written:
        print(f"nothing to land: the landing zone is up to date (the world has landed up to "
              f"{yesterday}, its clock says {settings.today}); `--days N` moves it forward")
        return 0
    print(f"landed {len(written)} day file(s): {written[0].name} .. {written[-1].name} "
          f"in {written[0].parent}")
    now = load_settings()
    if now.clock == "world":
        print(f"the world's clock is now {now.today}: forecasts start there; "
              f"{reload_code_location(now)}")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Simulates (when the dataset is the simulated world), launches `full_pipeline` over every
    partition through workspace.yaml's code location, in the real instance under
    RETAIL_ML_HOME, prints a line per step as it finishes, then a summary."""
    from ml_assets.demo import run

    return run(load_settings(), os.environ.get("RETAIL_ML_DATASET", "simulated"))


def rollback(args: argparse.Namespace) -> int:
    """Runs the `rollback` job in the instance under RETAIL_ML_HOME, so the rollback is in the
    run history as well as on the registry's versions."""
    import warnings

    import dagster as dg

    from ml_assets.definitions import build_definitions
    from ml_assets.instance import prepare_dagster_home

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    settings = load_settings()
    prepare_dagster_home(settings)
    defs = build_definitions(settings, os.environ.get("RETAIL_ML_DATASET", "simulated"))
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("rollback").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"retail_ml/trigger": "retail-ml rollback"})
    if not result.success:
        failure = next(e for e in result.all_events if e.is_step_failure)
        error = failure.step_failure_data.error
        print(f"retail-ml rollback: failed: {error.message.strip() if error else 'see the run'}",
              file=sys.stderr)
        return 1
    (observation,) = [e.asset_observation_data.asset_observation for e in result.all_events
                      if e.is_asset_observation]
    meta = {k: v.value for k, v in observation.metadata.items()}
    print(f"retail-ml rollback: champion is now version {meta['champion_version']} (was "
          f"{meta['rolled_back_from']}); serving follows {meta['serving_model_tag']}; run "
          f"{result.run_id}")
    return 0


def reproduce(args: argparse.Namespace) -> int:
    from ml_assets.training.reproduce import reproduce as run

    done = run(load_settings(), args.version)
    verdict = "identical predictions" if done.identical else "PREDICTIONS DIFFER"
    print(f"retail-ml reproduce: version {done.version} refitted from gold/training_set at Delta "
          f"version {done.training_set_version} ({done.objective}, {done.rounds} rounds): "
          f"{verdict} on {done.rows} rows, max |diff| {done.max_abs_diff:.3g}")
    return 0 if done.identical else 1


def complete_journey(args: argparse.Namespace) -> int:
    """Writes Complete Journey's files from the installed package (examples/datasets/
    complete_journey.yaml reads them) and says what it wrote."""
    from pathlib import Path

    from ml_assets.datasets.complete_journey import Extract, build_tables, write

    extract = Extract(frequency=args.frequency, top=args.top, start=args.start, end=args.end,
                      min_daily_units=args.min_daily_units, plan_lead_weeks=args.plan_lead_weeks)
    tables = build_tables(extract)
    for name, path in write(tables, Path(args.out)).items():
        frame = getattr(tables, name)
        what = [f"{frame.height:,} rows"]
        if "item_id" in frame.columns and name != "items":
            what.append(f"{frame.get_column('item_id').drop_nulls().n_unique()} series")
        if "date" in frame.columns:
            what.append(f"{frame.get_column('date').min()} .. {frame.get_column('date').max()}")
        print(f"{path}: {', '.join(what)}")
    print(f"{args.frequency} units of product categories over all stores; rows with 0 sold: "
          f"{(tables.sales.get_column('units_sold') == 0).mean():.1%}")
    return 0


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR as servers set it: a port
    whose last connections are closing (TIME_WAIT) counts as free, one being listened on not."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OSError, OverflowError):  # taken (or forbidden), or not a port number at all
            return False
    return True


def port_free(args: argparse.Namespace) -> int:
    """Exit 2 with one line when the port is taken: `make serve`, `make dev` and `make mlflow`
    check before starting, since each server's own error is a traceback deep in its startup."""
    if bindable(args.port):
        return 0
    spare = next((p for p in range(args.port + 10, args.port + 100) if bindable(p)),
                 args.port + 10)
    print(f"port {args.port} is in use (another server?): pick another with "
          f"`{args.hint + ' ' if args.hint else ''}PORT={spare}`", file=sys.stderr)
    return 2


def mlflow_url(args: argparse.Namespace) -> int:
    """The MLflow UI's link to the experiment's runs table: MLflow 3 opens a new browser in its
    GenAI view unless the link asks for the model-training one. Read straight from the sqlite
    store (no MLflow import: `make mlflow` prints it before the server starts)."""
    import sqlite3
    import warnings

    warnings.filterwarnings("ignore")  # dagster-mlflow's beta notices, on import
    from resources.tracking import EXPERIMENT_KIND

    base = f"http://127.0.0.1:{args.port}/#/experiments"
    db = load_settings().mlflow_dir / "mlflow.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            (found,) = con.execute("select min(experiment_id) from experiment_tags where key = ? "
                                   "and value = ?", EXPERIMENT_KIND).fetchone()
    except sqlite3.Error:  # no store yet: before the first `make demo`
        found = None
    print(f"{base}/{found}?workflowType=machine_learning" if found else base)
    return 0


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
    sub.add_parser("rollback", help="restore the previous champion (registry and serving)"
                   ).set_defaults(func=rollback)
    rep = sub.add_parser("reproduce", help="retrain a registered version from its recorded "
                         "Delta versions and compare predictions")
    rep.add_argument("version", help="the version of demand_forecaster in the MLflow registry")
    rep.set_defaults(func=reproduce)
    cj = sub.add_parser("complete-journey", help="write Complete Journey's files (real grocery "
                        "sales, promotions, categories) from the installed package, no network")
    cj.add_argument("--out", required=True, help="folder for sales/plan/items/calendar.csv")
    cj.add_argument("--frequency", choices=("daily", "weekly"), default="daily")
    cj.add_argument("--top", type=int, help="only the N best-selling categories")
    cj.add_argument("--start", type=dt.date.fromisoformat, help="first day (default 2017-01-01)")
    cj.add_argument("--end", type=dt.date.fromisoformat, help="last day (default 2017-12-31)")
    cj.add_argument("--min-daily-units", type=float, default=1.0,
                    help="leave out categories selling fewer units a day on average (1)")
    cj.add_argument("--plan-lead-weeks", type=int, help="weeks before a promotion week its "
                    "plan counts as delivered (default: the horizon, 4 daily, 8 weekly)")
    cj.set_defaults(func=complete_journey)
    free = sub.add_parser("port-free", help="exit 2 with one line if 127.0.0.1:PORT is taken")
    free.add_argument("port", type=int)
    free.add_argument("--hint", default="", help="the command to suggest, e.g. 'make serve'")
    free.set_defaults(func=port_free)
    link = sub.add_parser("mlflow-url", help="the MLflow UI's link to the experiment's runs")
    link.add_argument("port", type=int)
    link.set_defaults(func=mlflow_url)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
