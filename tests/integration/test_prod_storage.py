"""The production storage, for real: the Dagster instance that deploy/dagster.yaml configures
(run, event and schedule storage on PostgreSQL) runs two `features_job` runs at once, with the
prod resource set writing Delta over the S3 API; then the retrain assets register and promote
a model in an MLflow tracking server whose backend store is PostgreSQL.

Each module run gets its own databases (dropped afterwards). The only reason to skip is that
nothing answers on 127.0.0.1:5432; the K8sRunLauncher in deploy/dagster.yaml is configured but
never started: runs execute in their own processes, as in a run pod.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import psycopg2
import pytest

from ml_assets.partitions import build_partitions
from ml_assets.simulation.landing import land
from resources.settings import load_settings
from tests.conftest import TODAY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USER = os.environ.get("PGUSER", "postgres")
BUCKET = "retail-ml"
RETRAIN = ["training_set", "demand_model", "model_evaluation", "champion"]


def _connect(dbname: str = "test"):  # noqa: ANN202
    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname,
                            password=os.environ.get("PGPASSWORD", ""), connect_timeout=3)


def _query(dbname: str, sql: str) -> list[tuple]:
    with _connect(dbname) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def _world_env(home: Path) -> dict[str, str]:
    """A world smaller than the shared fixture's (3 stores x 4 items, 120 days): ingest cost
    grows with the landed files, and here two runs share the machine's cores."""
    home.mkdir(parents=True)
    (home / "dataset.yaml").write_text(
        "source: simulated\n"
        "simulation: {seed: 5, n_stores: 3, n_items: 4, history_days: 120,"
        " history_end_offset_days: 0}\n")
    return {"RETAIL_ML_HOME": str(home), "RETAIL_ML_DATASET": str(home / "dataset.yaml"),
            "RETAIL_ML_TODAY": TODAY.isoformat(), "RETAIL_ML_BACKTEST_ORIGINS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Two fresh databases (Dagster's and MLflow's: both have a `runs` table)."""
    try:  # the one reason to skip: no server there (a laptop); any other error fails
        socket.create_connection((PG_HOST, PG_PORT), timeout=3).close()
    except OSError as exc:
        reason = f"cannot connect to {PG_HOST}:{PG_PORT}: {exc}"
        print(reason)
        pytest.skip(reason)
    admin = _connect()
    admin.autocommit = True
    stem = f"retail_ml_{uuid.uuid4().hex[:10]}"
    names = {"dagster": f"{stem}_dagster", "mlflow": f"{stem}_mlflow"}
    with admin.cursor() as cur:
        for name in names.values():
            cur.execute(f"CREATE DATABASE {name}")
    try:
        yield names
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3 endpoint on localhost (moto): the prod Delta options go over the S3 API."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test-key",
           "AWS_SECRET_ACCESS_KEY": "test-secret"}
    boto3.client("s3", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"],
                 aws_access_key_id="test-key", aws_secret_access_key="test-secret"
                 ).create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(databases, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[dict[str, object]]:
    """`mlflow server` with its backend store on Postgres. Started first: its migrations run
    while the Dagster runs do."""
    port = _free_port()
    artifacts = tmp_path_factory.mktemp("mlflow_artifacts")
    log = open(artifacts.parent / "mlflow_server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri",
         f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{databases['mlflow']}",
         "--artifacts-destination", str(artifacts)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # Its job runner (huey, ten workers) serves GenAI jobs, not the registry.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    yield {"uri": f"http://127.0.0.1:{port}", "log": Path(log.name)}
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
    log.close()


def _wait_healthy(uri: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow server not healthy in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prod(databases, s3, mlflow_server, tmp_path_factory: pytest.TempPathFactory):
    """Two worlds in the production configuration sharing one Dagster instance, each featured
    by its own `dagster job execute` process, both started at once."""
    base = tmp_path_factory.mktemp("prod")
    dagster_home = base / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    instance_env = {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": PG_HOST,
                    "DAGSTER_PG_PORT": str(PG_PORT), "DAGSTER_PG_DB": databases["dagster"],
                    "DAGSTER_PG_USERNAME": PG_USER,
                    "DAGSTER_PG_PASSWORD": os.environ.get("PGPASSWORD", ""),
                    # read by the K8sRunLauncher only, which nothing here starts
                    "DAGSTER_K8S_SERVICE_ACCOUNT": "dagster",
                    "DAGSTER_K8S_JOB_NAMESPACE": "retail-ml",
                    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance"}
    run_config = base / "run.yaml"
    # The jobs' own executor runs the steps in the run's process, as in a run pod.
    run_config.write_text("execution:\n  config: {}\n")
    worlds, procs = {}, {}
    for name in ("north", "south"):
        env = {**_world_env(base / name), **s3, **instance_env,
               "RETAIL_ML_ENV": "prod", "RETAIL_ML_DELTA_ROOT": f"s3://{BUCKET}/{name}/delta",
               "RETAIL_ML_MLFLOW_URI": mlflow_server["uri"],
               # Dagster's storage is under test here; the Spark engine has its own tests.
               "RETAIL_ML_ENGINE": "polars"}
        settings = load_settings(env)
        land(settings)
        keys = build_partitions(settings).get_partition_keys()
        tags = {"dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1], "world": name}
        worlds[name] = {"env": env, "settings": settings, "keys": keys}
        procs[name] = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "ml_assets.definitions",
             "-j", "features_job", "-c", str(run_config), "--tags", json.dumps(tags)],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name}: dagster job execute failed:\n{output[-5000:]}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in instance_env.items():
            mp.setenv(key, value)
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        yield {"instance": instance, "worlds": worlds, "databases": databases,
               "mlflow": mlflow_server, "instance_env": instance_env}
        instance.dispose()


def test_instance_stores_everything_in_postgres(prod) -> None:
    instance = prod["instance"]
    assert {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                       instance.schedule_storage)} == {
        "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
    tables = {t for (t,) in _query(prod["databases"]["dagster"],
                                   "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"runs", "event_logs", "asset_keys", "jobs", "job_ticks"} <= tables


def test_two_concurrent_runs_both_succeed(prod) -> None:
    instance = prod["instance"]
    runs = instance.get_runs()
    assert sorted(r.tags["world"] for r in runs) == ["north", "south"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    stats = [instance.get_run_stats(r.run_id) for r in runs]
    print("runs (s):", [round(s.end_time - s.start_time, 1) for s in stats],
          "overlap (s):", round(min(s.end_time for s in stats)
                                - max(s.start_time for s in stats), 1))
    # Both were running at the same time: each started before the other ended.
    assert max(s.start_time for s in stats) < min(s.end_time for s in stats)
    for run in runs:
        assert instance.get_materialized_partitions(dg.AssetKey("features")) == set(
            prod["worlds"][run.tags["world"]]["keys"])


def test_each_runs_materializations_are_rows_in_postgres(prod) -> None:
    runs = {r.run_id: r.tags["world"] for r in prod["instance"].get_runs()}
    rows = _query(prod["databases"]["dagster"],
                  "SELECT run_id, asset_key, count(*) FROM event_logs "
                  "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                  "GROUP BY run_id, asset_key")
    by_run: dict[str, set[str]] = {}
    for run_id, asset_key, _ in rows:
        by_run.setdefault(run_id, set()).add(json.loads(asset_key)[-1])
    assert set(by_run) == set(runs)
    for assets in by_run.values():
        assert {"sales", "features", "stores", "items"} <= assets


def test_features_are_delta_tables_on_the_object_store(prod) -> None:
    import polars as pl

    from resources.prod import load_prod_config

    for world in prod["worlds"].values():
        config = load_prod_config(world["env"])
        assert config.delta_root.startswith("s3://")
        # what a run resolves: each dg.EnvVar (a secret) from the environment
        options = {k: world["env"][v.env_var_name] if isinstance(v, dg.EnvVar) else v
                   for k, v in config.storage_options.items()}
        landed = pl.read_csv(str(world["settings"].landing_dir / "sales" / "*.csv"))
        features = pl.read_delta(f"{config.delta_root}/silver/features",
                                 storage_options=options)
        assert features.height == landed.height > 0


def test_mlflow_on_postgres_registers_and_promotes_through_our_assets(prod) -> None:
    from ml_assets.definitions import build_definitions
    from ml_assets.training.registry import alias_version, load_alias, registry_client
    from ml_assets.training.reproduce import reproduce

    uri = prod["mlflow"]["uri"]
    _wait_healthy(uri, prod["mlflow"]["log"])
    world = prod["worlds"]["north"]
    before = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in world["env"].items():
            mp.setenv(key, value)
        defs = build_definitions(load_settings(), world["env"]["RETAIL_ML_DATASET"])
        assert defs.resources["platform"].get().mlflow_tracking_uri == uri
        result = dg.materialize(
            [defs.get_assets_def(a) for a in RETRAIN], resources=defs.resources,
            instance=prod["instance"], raise_on_error=False,
            tags={"retail_ml/trigger": "prod-storage-test"},
            run_config={"ops": {"demand_model": {"config": {"max_rounds": 100}}}})
        mlflow.end_run()
    mlflow.set_tracking_uri(before)
    assert result.success
    client = registry_client(uri)
    assert alias_version(client, "champion") == "1"
    champion = load_alias(uri, "champion")  # the booster comes back through the server
    assert champion is not None and champion.tags["gate"] == "passed"
    assert champion.tags["promotion_trigger"] == "prod-storage-test"
    db = prod["databases"]["mlflow"]
    assert sorted(_query(db, "SELECT name, alias, version FROM registered_model_aliases")) == [
        ("demand_forecaster", "challenger", 1), ("demand_forecaster", "champion", 1)]
    (run_status,) = _query(db, f"SELECT status FROM runs WHERE run_uuid = '{champion.run_id}'")
    assert run_status == ("FINISHED",)
    with pytest.MonkeyPatch.context() as mp:  # time travel on the object store
        for key, value in world["env"].items():
            mp.setenv(key, value)
        again = reproduce(load_settings(), "1")
    assert again.rows > 0 and again.identical, again
