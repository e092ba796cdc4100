"""`retail-ml demo` as a new user sees it: a line per step with its seconds, the long steps'
progress, a summary that tells the outcome truthfully with commands that work in it, no stack
traces, and one ranged run that `make dev` attributes to workspace.yaml's code location."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ml_assets.demo import BENTO, GATE, UI, Follower, Outcome, summary
from ml_assets.partitions import build_partitions
from resources.settings import load_settings
from tests.conftest import small_world_env
from tests.e2e.bento_world import bento_server
from tests.e2e.servers import wait_for_bento

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
RETAIL_ML = Path(sys.executable).parent / "retail-ml"  # what `make demo` runs


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("demo_output") / "home"
    # the world's own clock, as a new user's: its history ends yesterday, so the README's curl
    # for tomorrow must get a forecast
    env = {k: v for k, v in small_world_env(home).items() if k != "RETAIL_ML_TODAY"}
    # DAGSTER_HOME and BENTOML_HOME unset: the demo derives them from RETAIL_ML_HOME
    base = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BENTOML_HOME")}
    done = subprocess.run([str(RETAIL_ML), "demo"], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = re.search(r"\(run ([0-9a-f-]{36})\)", done.stdout).group(1)  # type: ignore[union-attr]
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    follower = Follower(run_id, 0.0)
    for record in instance.get_records_for_run(run_id).records:
        follower.lines(record.event_log_entry)
    return {"home": home, "env": env, "out": done.stdout, "err": done.stderr,
            "instance": instance, "run_id": run_id, "outcome": follower.outcome}


def test_each_step_prints_a_line_with_its_seconds_and_long_steps_their_progress(
        demo: dict) -> None:
    out = demo["out"]
    steps = re.findall(r"^  (\w+) +(\d+\.\d) s$", out, re.MULTILINE)
    assert {"sales", "features", "demand_model", "model_evaluation", "champion",
            "demand_forecaster_bento"} <= {step for step, _ in steps}, out
    # the lines came as the steps finished: the run's own order, not a list printed at the end
    started = demo["instance"].get_records_for_run(
        demo["run_id"], of_type=dg.DagsterEventType.STEP_SUCCESS).records
    assert [s for s, _ in steps] == [r.event_log_entry.step_key for r in started]
    assert re.search(r"^    model_evaluation: .*origin", out, re.MULTILINE), out
    assert re.search(r"^  run [0-9a-f-]{36} launched \(\d+\.\d s\)", out, re.MULTILINE), out


def test_the_summary_names_the_promotion_and_commands_that_work(demo: dict) -> None:
    out = demo["out"]
    # the clock is today's, so the world's days move: the XGBoost model or a baseline may win
    assert re.search(r"retail-ml demo: succeeded: (challenger v1 promoted to champion|no model "
                     r"beat the \w+ baseline, so the baseline is champion) in", out), out
    assert re.search(r"champion +demand_forecaster v\d, the", out), out
    assert "make serve   the Bento on" in out and "make dev" in out
    assert (demo["home"] / "bentoml" / "bentos" / "demand_forecaster").is_dir()


def test_no_stack_traces_reach_the_user(demo: dict) -> None:
    both = demo["out"] + demo["err"]
    assert "Traceback" not in both and " - ERROR - " not in both, both[-3000:]
    assert "BetaWarning" not in both


def test_the_run_went_through_the_code_location_as_one_ranged_run(demo: dict) -> None:
    instance = demo["instance"]
    (run,) = instance.get_runs()  # one run, not one per partition
    assert run.run_id == demo["run_id"] and run.is_success
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert run.remote_job_origin is not None, "no code-location origin: the UI cannot attribute it"
    assert run.remote_job_origin.location_name == module
    assert run.remote_job_origin.repository_origin.repository_name == "__repository__"
    assert run.tags["dagster/code_location"] == module
    keys = build_partitions(load_settings(demo["env"])).get_partition_keys()
    assert (run.tags["dagster/asset_partition_range_start"],
            run.tags["dagster/asset_partition_range_end"]) == (keys[0], keys[-1])


def _outcome(assets: list, instance: dg.DagsterInstance) -> tuple[Outcome, list[str]]:
    """A real (small) run's outcome and lines, as the demo reads them from the instance."""
    result = dg.materialize(assets, instance=instance, raise_on_error=False)
    follower = Follower(result.run_id, 0.0)
    lines = [line for record in instance.get_records_for_run(result.run_id).records
             for line in follower.lines(record.event_log_entry)]
    return follower.outcome, lines


def _gated(champion_version: str) -> list:
    """model_evaluation whose blocking promotion gate fails, and the champion after it."""
    @dg.asset(check_specs=[dg.AssetCheckSpec(GATE, asset="model_evaluation", blocking=True)])
    def model_evaluation() -> dg.MaterializeResult:
        gate = "The challenger's backtest WAPE is undefined (no actuals in the backtest windows)"
        return dg.MaterializeResult(
            metadata={"challenger_version": "1", "champion_version": champion_version,
                      "wape_challenger": 0.52, "wape_seasonal_naive": 0.54, "gate": gate},
            check_results=[dg.AssetCheckResult(check_name=GATE, passed=False)])

    @dg.asset(deps=[model_evaluation])
    def champion() -> None: ...
    return [model_evaluation, champion]


def test_a_gate_that_blocks_the_first_model_says_nothing_can_be_served(demo: dict,
                                                                       tmp_path: Path) -> None:
    """No champion and a blocked gate (a backtest without actuals: no baseline can be made
    champion either): the summary must not claim a kept champion nor offer `make serve`."""
    settings, log = load_settings(demo["env"]), tmp_path / "demo.log"
    with dg.DagsterInstance.ephemeral() as instance:
        blocked, lines = _outcome(_gated("none"), instance)
        kept = _outcome(_gated("1"), instance)[0]
    assert blocked.gate_blocked and not blocked.succeeded
    assert any(re.fullmatch(r"  model_evaluation +\d+\.\d s  blocked by the promotion gate", line)
               for line in lines), lines
    text = summary(blocked, settings, {}, False, log, 60)
    assert text.startswith("retail-ml demo: finished: the promotion gate blocked the "
                           "challenger, and there is no champion yet: nothing to serve"), text
    assert "kept the current champion" not in text and "make serve" not in text
    assert "simulate" not in text and "make dev" in text and "where to look" not in text
    text = summary(kept, settings, {}, True, log, 60)
    assert "the promotion gate kept the current champion (v1)" in text
    assert f"make serve   the Bento on {BENTO} (POST /forecast), as built by an earlier run" in text


def test_a_real_failure_prints_one_short_error_and_where_to_look(demo: dict,
                                                                 tmp_path: Path) -> None:
    @dg.asset
    def features() -> None:
        raise KeyError("units_sold")

    with dg.DagsterInstance.ephemeral() as instance:
        failed, lines = _outcome([features], instance)
    assert failed.failures == {"features": "KeyError: 'units_sold'"}, failed
    assert any(re.fullmatch(r"  features +\d+\.\d s  FAILED: KeyError: 'units_sold'", line)
               for line in lines), lines
    text = summary(failed, load_settings(demo["env"]), {}, False, tmp_path / "demo.log", 60)
    assert text.startswith("retail-ml demo: FAILED at features in 60 s"), text
    assert f"{UI}/runs/{failed.run_id}" in text and "`make dev`" in text
    assert str(tmp_path / "demo.log") in text and "make serve" not in text


def test_the_readme_curl_copied_as_it_is_gets_a_forecast(demo: dict) -> None:
    """After `make demo`, `make serve` and the README's curl, only its port moved to a free one."""
    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"^make serve .*\n(curl .*\\\n.*)$", readme, re.MULTILINE)
    env = {**os.environ, **demo["env"], "BENTOML_HOME": str(demo["home"] / "bentoml")}
    env.pop("DAGSTER_HOME", None)
    with bento_server("demand_forecaster:latest", env, ROOT, demo["home"] / "serve.log") as (
            url, proc):
        wait_for_bento(url, proc, demo["home"] / "serve.log")
        # the README's server address, whatever its port, becomes this test's free one
        command = re.sub(r"http://127\.0\.0\.1:\d+", url, block)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    answer = json.loads(done.stdout)
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    assert answer["date"] == tomorrow.isoformat() and answer["units"] >= 0, done.stdout
    assert (answer["store_id"], answer["item_id"]) == ("S001", "I0001")
