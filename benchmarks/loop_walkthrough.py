"""The README's monitoring walk-through, driven and timed: `make loop`.

    python -m benchmarks.loop_walkthrough [--shift 2.0] [--normal-days 14] [--drift-days 42]

On RETAIL_ML_HOME (`make demo` first; it runs the demo itself when no champion is served), it
starts `dagster dev` and `bentoml serve` as `make dev` and `make serve` do, then:
1. lands two normal weeks: the landing sensor runs the daily cycle, the retrain sensor stays
   quiet;
2. lands six weeks with demand shifted: the daily cycle measures drift and accuracy, the retrain
   sensor asks for one `retrain`, the gate decides, and the server answers with the new
   champion.
It prints the timeline of runs and sensor decisions, and the time from the drifted days landing
to the new champion answering, and writes it to benchmarks/results/loop.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import requests
from dagster._core.scheduler.instigation import TickStatus

from ml_assets.deployment.pointer import POINTER
from ml_assets.instance import prepare_dagster_home
from ml_assets.simulation.clock import WEBSERVER_FILE
from resources.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loop.md"
BIN = ROOT / ".venv" / "bin"


@contextmanager
def server(args: list[str], log: Path, env: dict[str, str]):
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_until(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except requests.RequestException:
            found = None
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []

    def mark(self, text: str) -> float:
        at = time.monotonic() - self.t0
        self.lines.append(f"| {at:7.1f} s | {text} |")
        print(f"[{at:7.1f} s] {text}", flush=True)
        return at


def runs_after(instance: dg.DagsterInstance, job: str, since: float) -> list[dg.RunRecord]:
    return [r for r in instance.get_run_records(dg.RunsFilter(job_name=job), limit=20)
            if r.create_timestamp.timestamp() >= since]


def finished(record: dg.RunRecord) -> bool:
    return record.dagster_run.status in (dg.DagsterRunStatus.SUCCESS,
                                         dg.DagsterRunStatus.FAILURE,
                                         dg.DagsterRunStatus.CANCELED)


def last_retrain_tick(instance: dg.DagsterInstance, since: float) -> str | None:
    """The retrain sensor's first decision after `since`: its skip reason, or its run key."""
    for state in instance.all_instigator_state():
        if state.name != "retrain_on_drift":
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5):
            # a tick still evaluating has no decision yet
            if tick.timestamp >= since and tick.status != TickStatus.STARTED:
                return tick.skip_reason or ", ".join(tick.run_keys) or tick.status.value
    return None


def step_seconds(instance: dg.DagsterInstance, record: dg.RunRecord) -> list[str]:
    """Where one run's time went: queued to started, then each step, from its event log."""
    run_id, start = record.dagster_run.run_id, record.start_time
    steps: dict[str, dict[str, float]] = {}
    for event in instance.all_logs(run_id):
        kind = event.dagster_event.event_type_value if event.dagster_event else None
        if kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            steps.setdefault(event.step_key or "?", {})[kind] = event.timestamp
    parts = [f"launch {start - record.create_timestamp.timestamp():.1f}" if start
             else "launch: not started"]
    for key, at in steps.items():
        end = at.get("STEP_SUCCESS") or at.get("STEP_FAILURE")
        if "STEP_START" in at and end and end - at["STEP_START"] >= 0.5:
            parts.append(f"{key} {end - at['STEP_START']:.1f}")
    return parts


def land(days: int, scenario: str | None, env: dict[str, str]) -> None:
    args = [str(BIN / "retail-ml"), "simulate", "--days", str(days)]
    args += ["--scenario", scenario] if scenario else []
    print(subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout.strip())


def daily_cycle(instance, timeline: Timeline, since: float, timeout: float) -> dg.RunRecord:
    record = wait_until("the landing sensor's daily_forecast run",
                        lambda: runs_after(instance, "daily_forecast", since), timeout)[-1]
    timeline.mark(f"daily_forecast run {record.dagster_run.run_id[:8]} launched by the landing "
                  "sensor")
    run_id = record.dagster_run.run_id
    done = wait_until("the daily_forecast run to finish",
                      lambda: (r := instance.get_run_record_by_id(run_id)) and finished(r) and r,
                      timeout)
    timeline.mark(f"daily_forecast {done.dagster_run.status.value}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shift", type=float, default=2.0)
    parser.add_argument("--normal-days", type=int, default=14)
    parser.add_argument("--drift-days", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    settings = load_settings()
    env = {**os.environ, "RETAIL_ML_HOME": str(settings.home),
           "DAGSTER_HOME": str(prepare_dagster_home(settings)),
           "BENTOML_HOME": os.environ.get("BENTOML_HOME", str(settings.bentoml_home)),
           "BENTOML_DO_NOT_TRACK": "true"}
    os.environ.update(env)
    if not (settings.serving_dir / POINTER).exists():
        subprocess.run([str(BIN / "retail-ml"), "demo"], env=env, check=True)
    timeline = Timeline()
    logs = settings.home / "loop"
    logs.mkdir(parents=True, exist_ok=True)
    with (server([str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", "3000"],
                 logs / "dagster.log", env),
          server([str(BIN / "bentoml"), "serve", "demand_forecaster:latest", "--port", "3001"],
                 logs / "bento.log", env),
          dg.DagsterInstance.get() as instance):
        wait_until("dagster dev", lambda: requests.get("http://127.0.0.1:3000/server_info",
                                                       timeout=2).ok, 300)
        # as `make dev` does: `retail-ml simulate` reloads this webserver's code location when
        # the world's clock moves past the machine's (ml_assets/simulation/clock.py)
        (settings.dagster_home / WEBSERVER_FILE).write_text(
            json.dumps({"url": "http://127.0.0.1:3000"}))
        wait_until("bentoml serve", lambda: requests.get("http://127.0.0.1:3001/readyz",
                                                         timeout=2).ok, 300)
        before = requests.get("http://127.0.0.1:3001/model", timeout=10).json()["model_version"]
        timeline.mark(f"dagster dev and bentoml serve up; serving version {before}")
        since = time.time()
        land(args.normal_days, None, env)
        timeline.mark(f"{args.normal_days} normal days landed")
        done = daily_cycle(instance, timeline, since, args.timeout)
        end = done.end_time or time.time()
        quiet = wait_until("a retrain sensor tick", lambda: last_retrain_tick(instance, end),
                           args.timeout)
        timeline.mark(f"retrain_on_drift: {quiet}")
        since = time.time()
        land(args.drift_days, f"level_shift:{args.shift}", env)
        landed = timeline.mark(f"{args.drift_days} days with demand x{args.shift} landed")
        daily_cycle(instance, timeline, since, args.timeout)
        retrain = wait_until("the retrain run", lambda: runs_after(instance, "retrain", since),
                             args.timeout)[-1]
        tags = retrain.dagster_run.tags
        timeline.mark(f"retrain run {retrain.dagster_run.run_id[:8]} requested, run key "
                      f"{tags.get('dagster/run_key')}: {tags.get('retail_ml/trigger_reason')}")
        served = wait_until(
            "the new champion answering",
            lambda: (v := requests.get("http://127.0.0.1:3001/model", timeout=10).json()[
                "model_version"]) != before and v, args.timeout)
        answered = timeline.mark(f"the server answers with version {served}")
        run_id = retrain.dagster_run.run_id
        run = wait_until("the retrain run to finish",
                         lambda: (r := instance.get_run_record_by_id(run_id)) and finished(r)
                         and r, args.timeout)
        timeline.mark(f"retrain run {run.dagster_run.status.value} (the Bento built after the "
                      "champion moved)")
        retrains = runs_after(instance, "retrain", since)
        drifted_cycle = runs_after(instance, "daily_forecast", since)[-1]
        breakdown = {name: step_seconds(instance, instance.get_run_record_by_id(
            r.dagster_run.run_id)) for name, r in (("daily_forecast", drifted_cycle),
                                                   ("retrain", run))}
    total = answered - landed
    loads = os.getloadavg()
    load = ", ".join(f"{x:.1f}" for x in loads) + (
        " (above the core count: other work shared the CPU)" if max(loads) > (os.cpu_count() or 1)
        else "")
    print(f"drifted days landed -> new champion serving: {total:.0f} s; retrain runs: "
          f"{len(retrains)}")
    RESULTS.write_text(
        f"# The monitoring loop under `dagster dev` ({dt.date.today()}, `make loop`)\n\n"
        f"{os.cpu_count()} cores, load average at the end {load}; RETAIL_ML_HOME "
        f"{settings.home}. Drifted days landed to new champion serving: **{total:.0f} s** "
        f"(target <= 180 s); retrain runs: {len(retrains)}.\n\n| at | event |\n|---|---|\n"
        + "\n".join(timeline.lines) + "\n\nSeconds per run after the drifted days landed (launch: "
        "queued to started, the run process loading the code; then each step of 0.5 s or more):"
        "\n\n" + "\n".join(f"- {name}: {', '.join(parts)}" for name, parts in breakdown.items())
        + "\n")
    return 0 if len(retrains) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
