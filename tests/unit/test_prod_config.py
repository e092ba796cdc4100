"""The production configuration, checked without servers: the prod resource set built from the
environment (and refused, naming the variable, when one is missing), deploy/dagster.yaml through
Dagster's own config schemas, the Helm values against the chart keys we rely on, the Dockerfile,
the Bento's docker section and the CI workflow against .ci/run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from resources.prod import MissingConfiguration, load_prod_config, storage_options
from resources.settings import load_settings
from tests.conftest import small_world_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
S3_ENV = {"RETAIL_ML_ENV": "prod", "RETAIL_ML_DELTA_ROOT": "s3://bucket/retail-ml/delta",
          "RETAIL_ML_MLFLOW_URI": "http://mlflow.retail-ml:5000", "AWS_REGION": "eu-west-1",
          "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}
INSTANCE_ENV = {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_PORT": "5432",
                "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_USERNAME": "dagster",
                "DAGSTER_PG_PASSWORD": "pg-secret", "DAGSTER_K8S_SERVICE_ACCOUNT": "dagster",
                "DAGSTER_K8S_JOB_NAMESPACE": "retail-ml",
                "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance"}


@pytest.fixture
def prod_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**small_world_env(tmp_path / "home"), **S3_ENV}
    for key in ("MLFLOW_TRACKING_URI", "RETAIL_ML_ENGINE", "RETAIL_ML_MLFLOW_ARTIFACTS",
                "AWS_ENDPOINT_URL", "RETAIL_ML_SPARK_MASTER", "RETAIL_ML_SPARK_PACKAGES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _prod_defs(env: dict[str, str]) -> dg.Definitions:
    from ml_assets.definitions import build_definitions

    return build_definitions(load_settings(), env["RETAIL_ML_DATASET"])


# --- the resource set ---------------------------------------------------------------------

def test_prod_definitions_build_with_object_store_mlflow_server_and_spark(prod_env) -> None:
    defs = _prod_defs(prod_env)
    delta, platform = defs.resources["delta"], defs.resources["platform"]
    assert delta.root == "s3://bucket/retail-ml/delta"
    assert delta.storage_options["aws_region"] == "eu-west-1"
    settings = platform.get()  # what an asset sees in a run
    assert settings.env == "prod" and settings.engine == "spark"
    assert settings.mlflow_tracking_uri == "http://mlflow.retail-ml:5000"
    assert defs.resolve_job_def("features_job") is not None
    spark = defs.resources["spark"]  # lazy: no JVM until a feature step asks for a session
    assert spark.master == "local[*]"
    assert spark.conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert not any("secret" in value for value in spark.conf.values())


def test_spark_reaches_an_s3_compatible_endpoint_and_takes_its_jars(prod_env,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.retail-ml:9000")
    monkeypatch.setenv("RETAIL_ML_SPARK_PACKAGES", "org.apache.hadoop:hadoop-aws:3.4.1")
    monkeypatch.setenv("RETAIL_ML_SPARK_MASTER", "spark://spark-master:7077")
    spark = _prod_defs(prod_env).resources["spark"]
    assert spark.master == "spark://spark-master:7077"
    assert spark.conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio.retail-ml:9000"
    assert spark.conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert spark.conf["spark.jars.packages"] == "org.apache.hadoop:hadoop-aws:3.4.1"


def test_secrets_are_env_vars_never_values_in_the_resource_config(prod_env) -> None:
    delta = _prod_defs(prod_env).resources["delta"]
    config = delta._convert_to_config_dictionary()  # what Dagster stores and shows
    assert config["storage_options"]["aws_secret_access_key"] == {
        "env": "AWS_SECRET_ACCESS_KEY"}
    assert config["storage_options"]["aws_access_key_id"] == {"env": "AWS_ACCESS_KEY_ID"}
    assert "very-secret-value" not in repr(config)
    # ...and a run resolves them from its own environment
    assert delta.process_config_and_initialize().storage_options[
        "aws_secret_access_key"] == "very-secret-value"


@pytest.mark.parametrize("drop", ["RETAIL_ML_DELTA_ROOT", "RETAIL_ML_MLFLOW_URI", "AWS_REGION",
                                  "AWS_SECRET_ACCESS_KEY"])
def test_a_missing_variable_fails_the_build_naming_it(prod_env, monkeypatch, drop) -> None:
    monkeypatch.delenv(drop)
    import ml_assets.definitions  # noqa: F401  importing reads no settings

    with pytest.raises(MissingConfiguration, match=drop):
        _prod_defs(prod_env)


def test_every_missing_variable_is_named_at_once() -> None:
    with pytest.raises(MissingConfiguration) as error:
        load_prod_config({"RETAIL_ML_ENV": "prod"})
    for name in ("RETAIL_ML_HOME", "RETAIL_ML_DELTA_ROOT", "RETAIL_ML_MLFLOW_URI"):
        assert name in str(error.value)


def test_mlflow_tracking_uri_counts_in_prod_only(tmp_path: Path) -> None:
    env = {**small_world_env(tmp_path), "MLFLOW_TRACKING_URI": "http://elsewhere:5000"}
    assert load_settings(env).mlflow_tracking_uri.startswith("sqlite:///")
    prod = load_settings({**env, "RETAIL_ML_ENV": "prod"})
    assert prod.mlflow_tracking_uri == "http://elsewhere:5000"
    assert load_settings({**env, "RETAIL_ML_ENV": "prod", "RETAIL_ML_ENGINE": "polars"}
                         ).engine == "polars"


def test_readers_outside_dagster_find_the_tables_on_the_object_store(
        prod_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from bentos.demand_forecaster.state import paths_for
    from resources.prod import OPTIONS

    for option in OPTIONS["s3"]:  # only this test's variables, whatever the machine has set
        if option.env not in prod_env:
            monkeypatch.delenv(option.env, raising=False)

    paths = paths_for(load_settings(prod_env))
    assert paths.features == "s3://bucket/retail-ml/delta/gold/forecast_features"
    # the values themselves: this process is the reader, there is no run config to keep clean
    assert paths.storage_options == {"aws_region": "eu-west-1",
                                     "aws_access_key_id": "AKIAEXAMPLE",
                                     "aws_secret_access_key": "very-secret-value"}
    local = load_settings({**prod_env, "RETAIL_ML_ENV": "local"})
    assert paths_for(local).features == str(local.delta_root / "gold" / "forecast_features")
    assert paths_for(local).storage_options is None


@pytest.mark.parametrize(("name", "uri"), [
    ("RETAIL_ML_MLFLOW_URI", "http://admin:hunter2@mlflow:5000"),
    ("RETAIL_ML_DELTA_ROOT", "s3://key:secret@bucket/delta")])
def test_a_password_in_a_uri_is_refused(name: str, uri: str) -> None:
    env = {**S3_ENV, "RETAIL_ML_HOME": "/data", name: uri}
    with pytest.raises(MissingConfiguration, match=f"{name} holds a password"):
        load_prod_config(env)


def test_unknown_scheme_and_plain_paths_are_refused() -> None:
    for root in ("hdfs://cluster/delta", "/mnt/delta"):
        with pytest.raises(MissingConfiguration, match="RETAIL_ML_DELTA_ROOT"):
            load_prod_config({**S3_ENV, "RETAIL_ML_HOME": "/data",
                              "RETAIL_ML_DELTA_ROOT": root})


def test_storage_options_per_backend() -> None:
    gcs = storage_options("gcs", {"GOOGLE_SERVICE_ACCOUNT": "/var/run/gcp/key.json",
                                  "GOOGLE_SERVICE_ACCOUNT_KEY": "{...}"})
    assert gcs["google_service_account"] == "/var/run/gcp/key.json"
    assert gcs["google_service_account_key"].env_var_name == "GOOGLE_SERVICE_ACCOUNT_KEY"
    azure = storage_options("azure", {"AZURE_STORAGE_ACCOUNT_NAME": "acct",
                                      "AZURE_STORAGE_ACCOUNT_KEY": "k", "UNRELATED": "x"})
    assert set(azure) == {"azure_storage_account_name", "azure_storage_account_key"}
    s3 = storage_options("s3", {"AWS_REGION": "us-east-1", "AWS_ROLE_ARN": "arn:aws:iam::1:r",
                                "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"})
    assert s3 == {"aws_region": "us-east-1", "aws_role_arn": "arn:aws:iam::1:r",
                  "aws_web_identity_token_file": "/var/run/token"}  # IRSA: no keys at all
    config = load_prod_config({"RETAIL_ML_HOME": "/data", "RETAIL_ML_MLFLOW_URI": "http://m",
                               "RETAIL_ML_DELTA_ROOT": "abfss://c@acct.dfs.core.windows.net/d",
                               "AZURE_STORAGE_ACCOUNT_NAME": "acct"})
    assert config.storage_options == {"azure_storage_account_name": "acct"}


# --- deploy/dagster.yaml through Dagster's own schemas -------------------------------------

def _instance_config(monkeypatch: pytest.MonkeyPatch) -> dict:
    from dagster._core.instance.config import dagster_instance_config

    for key, value in INSTANCE_ENV.items():
        monkeypatch.setenv(key, value)
    config, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    return dict(config)


def _class_config(section: dict) -> Any:
    """Validates a configurable class's config against that class's own schema, as the
    instance does when it builds it (without building it: no database, no cluster)."""
    import importlib

    from dagster._config import process_config, resolve_to_config_type

    klass = getattr(importlib.import_module(section["module"]), section["class"])
    result = process_config(resolve_to_config_type(klass.config_type()), section.get("config", {}))
    assert result.success, [e.message for e in result.errors or []]
    return result.value


def test_dagster_yaml_is_a_valid_instance_config(monkeypatch) -> None:
    config = _instance_config(monkeypatch)
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres")
        db = _class_config(config[key])["postgres_db"]
        assert (db["hostname"], db["db_name"], db["password"]) == ("postgres", "dagster",
                                                                  "pg-secret")
    launcher = _class_config(config["run_launcher"])
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert launcher["instance_config_map"] == "dagster-instance"
    assert launcher["postgres_password_secret"] == "dagster-postgresql-secret"
    coordinator = _class_config(config["run_coordinator"])
    assert coordinator["max_concurrent_runs"] == 4
    _class_config(config["compute_logs"])


def test_dagster_yaml_names_a_missing_variable(monkeypatch) -> None:
    from dagster._core.instance.ref import InstanceRef

    _instance_config(monkeypatch)
    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        InstanceRef.from_dir(str(DEPLOY)).run_storage  # noqa: B018


def test_dagster_yaml_holds_no_secret() -> None:
    text = (DEPLOY / "dagster.yaml").read_text()
    assert "password: {env: DAGSTER_PG_PASSWORD}" in text
    assert not re.search(r"password:\s*[^{\s]", text)


# --- Helm values ----------------------------------------------------------------------------

# The keys we set, as the Dagster chart's values.schema.json (chart 1.13.x) names them. Full
# schema validation is `helm lint` (docs/production.md): the schema is not on PyPI.
CHART_KEYS = {
    "": {"global", "dagster-user-deployments", "runLauncher", "postgresql",
         "generatePostgresqlPasswordSecret", "dagsterDaemon", "computeLogManager", "retention",
         "telemetry", "dagsterWebserver"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "deployment": {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "port",
                   "includeConfigInLaunchedRuns", "env", "envConfigMaps", "envSecrets",
                   "volumes", "volumeMounts", "podSecurityContext", "securityContext",
                   "resources", "annotations", "nodeSelector", "labels"},
    "image": {"repository", "tag", "pullPolicy"},
    "runLauncher": {"type", "config"},
    "k8sRunLauncher": {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig",
                       "kubeconfigFile", "envConfigMaps", "envSecrets", "envVars",
                       "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
                       "schedulerName", "securityContext", "runK8sConfig"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service"},
    "dagsterDaemon": {"enabled", "runCoordinator", "runMonitoring", "runRetries", "env",
                      "envConfigMaps", "envSecrets", "resources"},
    "queuedRunCoordinator": {"maxConcurrentRuns", "tagConcurrencyLimits",
                             "dequeueIntervalSeconds"},
}


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values-prod.yaml").read_text())


def test_helm_values_use_only_chart_keys() -> None:
    values = _values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    for name, section in {"": values, "global": values["global"],
                          "dagster-user-deployments": values["dagster-user-deployments"],
                          "deployment": deployment, "image": deployment["image"],
                          "runLauncher": values["runLauncher"], "k8sRunLauncher": launcher,
                          "postgresql": values["postgresql"],
                          "dagsterDaemon": values["dagsterDaemon"],
                          "queuedRunCoordinator": queued}.items():
        assert set(section) <= CHART_KEYS[name], (name, set(section) - CHART_KEYS[name])
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False


def test_helm_code_location_is_the_module_workspace_yaml_loads() -> None:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    (location,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    module = location["python_module"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    cmd = re.search(r"^CMD (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert cmd and yaml.safe_load(cmd.group(1))[:5] == ["dagster", "api", "grpc", "-m", module]
    assert f"-p\", \"{deployment['port']}\"" in cmd.group(1)


def test_helm_values_agree_with_dagster_yaml(monkeypatch) -> None:
    config, values = _instance_config(monkeypatch), _values()
    launcher = config["run_launcher"]["config"]
    helm = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert [m["name"] for m in helm["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in helm["envSecrets"]] == launcher["env_secrets"]
    assert helm["volumes"] == launcher["volumes"]
    assert [(m["name"], m["mountPath"]) for m in helm["volumeMounts"]] == [
        (m["name"], m["mount_path"]) for m in launcher["volume_mounts"]]
    assert helm["runK8sConfig"]["containerConfig"] == launcher["run_k8s_config"][
        "container_config"]
    assert helm["failPodOnRunFailure"] == launcher["fail_pod_on_run_failure"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = config["run_coordinator"]["config"]
    assert queued["maxConcurrentRuns"] == coordinator["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == coordinator["tag_concurrency_limits"]
    assert values["global"]["postgresqlSecretName"] == launcher["postgres_password_secret"]
    assert values["postgresql"]["postgresqlScheme"] == config["run_storage"]["config"][
        "postgres_db"]["scheme"]
    assert values["global"]["dagsterHome"] == launcher["dagster_home"]


# --- images ----------------------------------------------------------------------------------

def test_dockerfile_installs_the_lock_and_runs_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "RETAIL_ML_ENV=prod" in text
    for folder in ("ml_assets", "resources", "sensors", "bentos"):
        assert f"COPY {folder} ./{folder}" in text


def test_bento_docker_section_renders_a_containerfile(tmp_path: Path) -> None:
    """What `bentoml containerize` would build, rendered without a Docker engine."""
    from bentoml._internal.bento.build_config import BentoBuildConfig
    from bentoml._internal.container.generate import generate_containerfile

    config = BentoBuildConfig.from_file(
        str(ROOT / "bentos" / "demand_forecaster" / "bentofile.yaml")).with_defaults()
    dockerfile = generate_containerfile(config.docker, str(ROOT), conda=config.conda,
                                        bento_fs=tmp_path)
    assert "FROM python:3.11-slim" in dockerfile
    assert "libgomp1" in dockerfile


def test_the_bentos_pins_are_the_lock_files() -> None:
    """The Bento installs its packages from its own list (locking them offline fails): each pin
    must be the version uv.lock gives the code location."""
    import tomllib

    locked = {p["name"]: p["version"] for p in
              tomllib.loads((ROOT / "uv.lock").read_text())["package"] if "version" in p}
    bentofile = yaml.safe_load((ROOT / "bentos" / "demand_forecaster" / "bentofile.yaml")
                               .read_text())
    pins = dict(p.split("==") for p in bentofile["python"]["packages"])
    assert "redis" in pins and "xgboost" in pins
    assert {name: locked.get(name) for name in pins} == pins


# --- CI ----------------------------------------------------------------------------------------

def _make_commands(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines()
            if line.strip().startswith("make ")]


def test_ci_workflow_test_job_runs_what_ci_run_runs() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    test = workflow["jobs"]["test"]
    steps = "\n".join(step.get("run", "") for step in test["steps"])
    assert _make_commands(steps) == _make_commands((ROOT / ".ci" / "run").read_text())
    assert {"postgres", "redis"} <= set(test["services"])
    postgres = test["services"]["postgres"]
    assert "5432:5432" in postgres["ports"]
    assert postgres["env"]["POSTGRES_DB"] == "test"


def test_ci_workflow_publishes_on_main_only() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = workflow["jobs"]
    for name in ("bento", "image"):
        assert "test" in jobs[name]["needs"]
        assert "refs/heads/main" in jobs[name]["if"]
    bento_runs = " ".join(step.get("run", "") for step in jobs["bento"]["steps"])
    assert "make demo" in bento_runs and "make bento-export" in bento_runs
    image = next(s for s in jobs["image"]["steps"]
                 if s.get("uses", "").startswith("docker/build-push-action"))
    assert image["with"]["file"] == "deploy/Dockerfile" and image["with"]["push"] is True
    login = next(s for s in jobs["image"]["steps"]
                 if s.get("uses", "").startswith("docker/login-action"))
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert jobs["image"]["permissions"]["packages"] == "write"
