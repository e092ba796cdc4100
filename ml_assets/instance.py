"""The laptop Dagster instance that `retail-ml` commands, `make dev` and `make loop` share, and
runs launched into it through workspace.yaml's code location."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from resources.settings import Settings

if TYPE_CHECKING:
    from dagster._core.workspace.context import BaseWorkspaceRequestContext as Workspace

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = ROOT / "deploy" / "dagster.local.yaml"
WORKSPACE = ROOT / "workspace.yaml"
# A run over a partition range records one "planned" event per asset (the range as a subset)
# instead of one per partition and asset: 942 daily partitions spent most of a minute in sqlite
# before their first step (benchmarks/results/dagster.md). Dagster's price: the partitions of a
# run that fails stay "missing" rather than turning "failed"; the run itself shows the failure.
PLANNED_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME (default: under RETAIL_ML_HOME), created, with deploy/dagster.local.yaml as
    its dagster.yaml unless one is there already. Sets DAGSTER_HOME for this process, and
    PLANNED_SUBSET unless the environment says otherwise (the Makefile sets both the same way
    for `make dev`)."""
    os.environ.setdefault(PLANNED_SUBSET, "true")
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(LOCAL_CONFIG, config)
    return home


class CodeLocationError(Exception):
    """workspace.yaml's code location did not load; the message says why, in one line."""


@contextlib.contextmanager
def code_location(output: Path) -> Iterator[tuple[dg.DagsterInstance, Workspace]]:
    """The instance, and the code location that workspace.yaml defines, loaded by its own code
    server as `make dev` and `dagster job launch -w workspace.yaml` load it. The code server and
    the run workers it starts write their output (Dagster's console log included) to `output`.
    Leaving stops the code server, and with it any run it still executes."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with dg.DagsterInstance.get() as instance:
        with _children_write_to(output):  # the code server starts (and keeps its output) here
            process = WorkspaceProcessContext(instance, WorkspaceFileTarget([str(WORKSPACE)]),
                                              version=dg.__version__)
        with process:
            workspace = process.create_request_context()
            (name,) = workspace.code_location_names
            if workspace.has_code_location_error(name):
                error = workspace.get_code_location_error(name)
                while error is not None and error.cause is not None:  # the user's own error
                    error = error.cause
                raise CodeLocationError(f"code location {name} did not load: " + (
                    error.message.strip().splitlines()[0] if error else "see its output"))
            yield instance, workspace


def launch(instance: dg.DagsterInstance, workspace: Workspace, job_name: str,
           tags: dict[str, str]) -> dg.DagsterRun:
    """Creates the run from the code location's job and launches it, as `dagster job launch`
    does (dagster/_cli/job.py, _create_run) but without the run queue, which only a running
    daemon empties: the run records its code-location origin, so the UI's Overview, job and
    asset pages attribute it."""
    from dagster._core.definitions.selector import JobSubsetSelector

    (name,) = workspace.code_location_names
    location = workspace.get_code_location(name)
    (repo,) = location.get_repositories().values()
    job = location.get_job(JobSubsetSelector(location_name=name, repository_name=repo.name,
                                             job_name=job_name, op_selection=None))
    plan = location.get_execution_plan(job, {}, step_keys_to_execute=None, known_state=None,
                                       instance=instance).execution_plan_snapshot
    run = instance.create_run(
        job_name=job_name, run_id=None, run_config={}, resolved_op_selection=None,
        step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None,
        root_run_id=None, parent_run_id=None, tags={**job.tags, **tags},
        job_snapshot=job.job_snapshot, execution_plan_snapshot=plan,
        parent_job_snapshot=job.parent_job_snapshot, remote_job_origin=job.get_remote_origin(),
        job_code_origin=job.get_python_origin(), asset_selection=None,
        asset_check_selection=None, asset_graph=repo.asset_graph)
    return instance.launch_run(run.run_id, workspace)


@contextlib.contextmanager
def _children_write_to(path: Path) -> Iterator[None]:
    """Processes started inside inherit stdout and stderr writing to `path` (their own output
    is not the user's); this process's own point back to the terminal when it leaves."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)
