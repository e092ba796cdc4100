"""`retail-ml demo`: the whole graph in the real instance under RETAIL_ML_HOME, launched through
workspace.yaml's code location (as `make dev` shows it), a line per step as it finishes, then a
summary that says what happened and what can be done next."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from resources.settings import Settings

JOB = "full_pipeline"
GATE = "promotion_gate"  # ml_assets.evaluation.assets.GATE (importing it costs MLflow's import)
PROGRESS = "progress: "  # the prefix of the log lines the long steps report progress with
UI = "http://127.0.0.1:3000"  # `make dev`'s default
BENTO = "http://127.0.0.1:3001"  # `make serve`'s default
RUN = "(run)"  # Outcome.failures' key for a failure outside any step


@dataclass
class Outcome:
    """What the run did, as its event log tells: plain data, the summary's only input."""

    run_id: str
    succeeded: bool = False
    failures: dict[str, str] = field(default_factory=dict)  # step key -> the error, one line
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed
    metadata: dict[str, dict[str, object]] = field(default_factory=dict)  # asset -> its last

    @property
    def gate_blocked(self) -> bool:
        """The run failed only because the promotion gate held the challenger back."""
        return set(self.failures) == {"model_evaluation"} and self.checks.get(GATE) is False


class Follower:
    """Reads the run's event log entries in order: the lines to print as steps finish, and the
    Outcome."""

    def __init__(self, run_id: str, since: float) -> None:
        self.outcome = Outcome(run_id)
        self.since = since  # time.monotonic() at the demo's start, for the run's own milestones
        self.started: dict[str, float] = {}
        self.finished: set[str] = set()

    def lines(self, entry: dg.EventLogEntry) -> list[str]:
        step, event = entry.step_key or "", entry.dagster_event
        if event is None:  # a log line of the asset's own
            message, since = entry.user_message, self.started.get(step, entry.timestamp)
            return [f"    {step}: {message.removeprefix(PROGRESS)} "
                    f"({entry.timestamp - since:.0f} s in)"] if message.startswith(PROGRESS) else []
        kind, data = event.event_type, event.event_specific_data
        if kind == dg.DagsterEventType.STEP_START:
            self.started[step] = entry.timestamp
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            self.outcome.metadata[event.asset_key.to_user_string()] = {  # type: ignore[union-attr]
                k: v.value for k, v in data.materialization.metadata.items()}  # type: ignore[union-attr]
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            self.outcome.checks[data.check_name] = data.passed  # type: ignore[union-attr]
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            self.finished.add(step)
            seconds = entry.timestamp - self.started.get(step, entry.timestamp)
            line = f"  {step:<26}{seconds:7.1f} s"
            if kind == dg.DagsterEventType.STEP_SUCCESS:
                return [line]
            self.outcome.failures[step] = short_error(event.step_failure_data)
            blocked = step == "model_evaluation" and self.outcome.checks.get(GATE) is False
            return [line + ("  blocked by the promotion gate" if blocked
                            else f"  FAILED: {self.outcome.failures[step]}")]
        elif kind == dg.DagsterEventType.RUN_START:  # its worker process has loaded the code
            return [f"  run started ({time.monotonic() - self.since:.1f} s)"]
        elif kind == dg.DagsterEventType.RUN_SUCCESS:
            self.outcome.succeeded = True
        elif kind in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED) and not \
                self.outcome.failures:  # before any step failed: resources, the worker, a cancel
            why = "canceled" if kind == dg.DagsterEventType.RUN_CANCELED else short_error(data)
            self.outcome.failures[RUN] = why
            return [f"  run FAILED: {why}"]
        return []


def short_error(failure: object) -> str:
    """The failure's own words in one line: a dg.Failure's description, else the innermost
    cause (Dagster wraps the user's exception), without its stack trace."""
    user = getattr(failure, "user_failure_data", None)
    if user is not None and user.description:
        return user.description.strip().splitlines()[0]
    error = getattr(failure, "error", None)
    while error is not None and error.cause is not None:
        error = error.cause
    text = error.message.strip().splitlines()[0] if error is not None else "see the run"
    return text if len(text) <= 200 else text[:197] + "..."


def follow(instance: dg.DagsterInstance, run: dg.DagsterRun, follower: Follower) -> None:
    """Prints the followers' lines until the run has finished and its log is read to the end."""
    cursor = None
    while True:
        done = instance.get_run_by_id(run.run_id).is_finished  # type: ignore[union-attr]
        page = instance.get_records_for_run(run.run_id, cursor=cursor)
        for record in page.records:
            for line in follower.lines(record.event_log_entry):
                print(line, flush=True)
        cursor = page.cursor
        if done and not page.has_more:
            return
        if not page.has_more:
            time.sleep(1)


def run(settings: Settings, dataset_ref: str) -> int:
    # Dagster's beta notices concern its API, not the user's demo: keep the output readable.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from ml_assets.instance import CodeLocationError, code_location, launch, prepare_dagster_home
    from ml_assets.partitions import build_partitions, keys_with_data
    from ml_assets.simulation.landing import land, landed_days
    from resources.settings import world_clock

    dagster_home = prepare_dagster_home(settings)
    log = settings.home / "demo.log"  # the code server's and the run's own console output
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if settings.dataset.simulation is not None and not landed_days(settings):
        days = land(settings)  # the history; `retail-ml simulate` lands the days since
        print(f"retail-ml demo: landed {len(days)} days of simulated history "
              f"({time.monotonic() - started:.1f} s)", flush=True)
        if settings.clock == "wall" and (world := world_clock(settings.home)):
            settings = settings.model_copy(update={"today": world, "clock": "world"})
    keys = keys_with_data(settings, build_partitions(settings).get_partition_keys())
    print(f"retail-ml demo: running {JOB} over {len(keys)} partitions ({keys[0]} .. {keys[-1]}) "
          f"in {dagster_home}", flush=True)
    tags = {"dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1], "retail_ml/trigger": "make demo"}
    try:
        with code_location(log) as (instance, workspace):
            print(f"  code location {workspace.code_location_names[0]} loaded from "
                  f"workspace.yaml ({time.monotonic() - started:.1f} s)", flush=True)
            launched = launch(instance, workspace, JOB, tags)
            print(f"  run {launched.run_id} launched ({time.monotonic() - started:.1f} s); "
                  f"`make dev` shows it at {UI}/runs/{launched.run_id}", flush=True)
            follower = Follower(launched.run_id, started)
            try:
                follow(instance, launched, follower)
            except KeyboardInterrupt:  # Ctrl-C: the run stops too, and says so in the UI
                if not instance.get_run_by_id(launched.run_id).is_finished:  # type: ignore[union-attr]
                    instance.run_launcher.terminate(launched.run_id)
                print(f"retail-ml demo: stopped; run {launched.run_id} canceled")
                return 130
    except CodeLocationError as exc:
        print(f"retail-ml demo: FAILED: {str(exc).rstrip('.')}. The code server's output: {log}")
        return 1
    not_run = [s for s in launched.step_keys_to_execute or [] if s not in follower.finished]
    if not_run:
        why = "downstream of the gate" if follower.outcome.gate_blocked else "after the failure"
        print(f"  not run ({why}): {', '.join(not_run)}")
    bento = (settings.bentoml_home / "bentos" / "demand_forecaster").is_dir()
    print(summary(follower.outcome, settings, table_rows(settings, dataset_ref), bento, log,
                  time.monotonic() - started))
    return 0 if follower.outcome.succeeded or follower.outcome.gate_blocked else 1


def table_rows(settings: Settings, dataset_ref: str) -> dict[str, tuple[int, int | None]]:
    """The main tables' rows and Delta versions, through the environment's Delta resource."""
    from resources import build_resources

    delta = build_resources(settings, dataset_ref)["delta"]
    return {table: (delta.scan(table).select("date").collect().height, delta.version(table))
            for table in ("bronze/sales", "bronze/sales_quarantine", "silver/features",
                          "gold/batch_forecasts") if delta.exists(table)}


def headline(outcome: Outcome) -> str:
    evaluation, champion = (outcome.metadata.get(k, {}) for k in ("model_evaluation", "champion"))
    if outcome.succeeded:
        kind = champion.get("kind", "xgboost")
        if not champion:
            return "succeeded"
        if kind != "xgboost":
            return f"succeeded: no model beat the {kind} baseline, so the baseline is champion"
        if champion.get("changed") is False:
            return f"succeeded: v{champion['champion_version']} stays champion"
        return f"succeeded: challenger v{champion['champion_version']} promoted to champion"
    if outcome.gate_blocked:
        current = evaluation.get("champion_version", "none")
        if current != "none":
            return f"finished: the promotion gate kept the current champion (v{current})"
        return ("finished: the promotion gate blocked the challenger, and there is no champion "
                "yet: nothing to serve")
    steps = [step for step in outcome.failures if step != RUN]
    return ("FAILED at " + ", ".join(steps) if steps
            else f"FAILED: {outcome.failures.get(RUN, 'see the run')}")


def summary(outcome: Outcome, settings: Settings, rows: dict[str, tuple[int, int | None]],
            bento_exists: bool, log: Path, seconds: float) -> str:
    """The run's outcome, the tables, the evaluation and the commands that work next. `rows`:
    table -> (rows, Delta version); `bento_exists`: a demand_forecaster Bento is in the store."""
    lines = [f"retail-ml demo: {headline(outcome)} in {seconds:.0f} s (run {outcome.run_id})",
             f"  RETAIL_ML_HOME   {settings.home}"]
    lines += [f"  {table:<24}{n:>11,} rows, Delta v{version}"
              for table, (n, version) in rows.items()]
    lines += evaluation_lines(outcome.metadata.get("model_evaluation", {}))
    champion = outcome.metadata.get("champion", {})
    if champion:
        kind = champion.get("kind", "xgboost")
        what = ("the XGBoost model" if kind == "xgboost" else
                f"the {kind} baseline: the XGBoost challenger did not beat it")
        lines.append(f"  champion         demand_forecaster v{champion['champion_version']}, "
                     f"{what} (previous: {champion['previous_version']})")
    built = outcome.metadata.get("demand_forecaster_bento", {})
    if built:
        lines.append(f"  Bento            {built['bento_tag']}")
    failed = not (outcome.succeeded or outcome.gate_blocked)
    if failed:
        lines.append(f"  where to look    `make dev`, then {UI}/runs/{outcome.run_id} (each "
                     f"step's log and stack trace); the run's console output is in {log}")
    return "\n".join(lines + next_commands(failed, bool(built), bento_exists,
                                           settings.dataset.simulation is not None))


def next_commands(failed: bool, built: bool, bento_exists: bool, simulated: bool) -> list[str]:
    """The commands that work after this outcome: `make serve` only when a Bento exists (it
    serves the latest), the simulated world's next days only when a champion serves them."""
    look = "the failed run's steps and logs" if failed else "lineage, report, gate"
    lines = ["next:", f"  make dev     Dagster UI on {UI} ({look})"]
    if bento_exists:
        lines.append(f"  make serve   the Bento on {BENTO} (POST /forecast)"
                     + ("" if built else ", as built by an earlier run"))
    else:
        lines.append("  (nothing to serve: no champion has a Bento yet"
                     + (")" if failed else "; see the promotion gate above)"))
    lines.append("  make mlflow  MLflow UI on http://127.0.0.1:5000 (runs, versions, aliases)")
    if simulated and bento_exists and not failed:
        lines += ["  .venv/bin/retail-ml simulate --days 14   two more weeks land; with `make dev` "
                  "running, the daily cycle and monitoring follow",
                  "  .venv/bin/retail-ml simulate --days 42 --scenario level_shift:2.0   demand "
                  "doubles: drift, one retrain, the gate, the new champion served"]
    return lines


def evaluation_lines(evaluation: dict[str, object]) -> list[str]:
    """The challenger's backtest against the baselines and floors, and the gate's sentence."""
    if not evaluation:
        return []
    model, naive = evaluation["wape_challenger"], evaluation["wape_seasonal_naive"]
    change = f" ({1 - model / naive:.0%} lower)" if naive > 0 else ""  # type: ignore[operator]
    lines = [f"  challenger       v{evaluation['challenger_version']}: backtest WAPE "
             f"{model:.4f} vs seasonal naive {naive:.4f}{change}"]
    if "wape_ratio_challenger_oracle" in evaluation:
        lines.append(f"  noise floor      the oracle (true expected demand) scores WAPE "
                     f"{evaluation['wape_oracle']:.4f}: the challenger's is "
                     f"{evaluation['wape_ratio_challenger_oracle']:.2f}x that")
    if "wape_ratio_challenger_origin_oracle" in evaluation:
        lines.append(f"  reachable floor  the oracle as of each origin (the world's rules, "
                     f"not its later draws) scores {evaluation['wape_origin_oracle']:.4f}: "
                     f"the challenger's is "
                     f"{evaluation['wape_ratio_challenger_origin_oracle']:.2f}x that")
    if "interval_coverage" in evaluation:
        coverage = evaluation["interval_coverage"]
        near_first = sorted((b for b in coverage if b != "all"),  # type: ignore[union-attr]
                            key=lambda b: int(b.split("-")[0].rstrip("+")))
        buckets = ", ".join(f"{b} {coverage[b]:.0%}" for b in near_first)  # type: ignore[index]
        lines.append(f"  intervals        {evaluation['interval_level']:.0%} intervals held "
                     f"{coverage['all']:.1%} of the backtest's actuals "  # type: ignore[index]
                     f"(by horizon: {buckets})")
    lines.append(f"  promotion gate   {evaluation['gate']}")
    return lines
