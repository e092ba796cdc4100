"""The production resource set (RETAIL_ML_ENV=prod): Delta tables on an object store, an MLflow
tracking server and Spark for features, all configured from the environment.

Everything is read when the Definitions are built (when Dagster loads the code location), never
at import. A missing variable fails there with one message naming every missing variable.
Secrets reach the resources as `dg.EnvVar`: the resource config (shown in the UI) holds the
variable's name, and each run pod reads the value from its own environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from resources.settings import Settings

EXPERIMENT = "retail-demand"  # the same experiment as the local set


class MissingConfiguration(ValueError):
    """Production settings that are absent or unusable, each named with what it is for."""


@dataclass(frozen=True)
class Option:
    env: str  # the environment variable read
    key: str  # the delta-rs (object_store) storage option it becomes
    secret: bool = False  # secrets stay out of the resource config: passed as dg.EnvVar


# delta-rs and polars take the same object_store keys. Only variables that are set are passed.
OPTIONS: dict[str, tuple[Option, ...]] = {
    "s3": (
        Option("AWS_REGION", "aws_region"),
        Option("AWS_ENDPOINT_URL", "aws_endpoint_url"),  # MinIO, R2, LocalStack...
        Option("AWS_ALLOW_HTTP", "allow_http"),  # a plain-http endpoint (in-cluster MinIO)
        # `etag` on MinIO or R2; AWS S3 itself has the conditional writes delta-rs relies on.
        Option("AWS_CONDITIONAL_PUT", "aws_conditional_put"),
        Option("AWS_ROLE_ARN", "aws_role_arn"),  # IRSA: web identity instead of keys
        Option("AWS_WEB_IDENTITY_TOKEN_FILE", "aws_web_identity_token_file"),
        Option("AWS_ACCESS_KEY_ID", "aws_access_key_id", secret=True),
        Option("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", secret=True),
        Option("AWS_SESSION_TOKEN", "aws_session_token", secret=True),
    ),
    "gcs": (
        Option("GOOGLE_SERVICE_ACCOUNT", "google_service_account"),  # a key file's path
        Option("GOOGLE_APPLICATION_CREDENTIALS", "google_application_credentials"),
        Option("GOOGLE_SERVICE_ACCOUNT_KEY", "google_service_account_key", secret=True),
    ),
    "azure": (
        Option("AZURE_STORAGE_ACCOUNT_NAME", "azure_storage_account_name"),
        Option("AZURE_CLIENT_ID", "azure_client_id"),
        Option("AZURE_TENANT_ID", "azure_tenant_id"),
        Option("AZURE_FEDERATED_TOKEN_FILE", "azure_federated_token_file"),  # workload identity
        Option("AZURE_STORAGE_ACCOUNT_KEY", "azure_storage_account_key", secret=True),
        Option("AZURE_STORAGE_SAS_TOKEN", "azure_storage_sas_key", secret=True),
        Option("AZURE_CLIENT_SECRET", "azure_client_secret", secret=True),
    ),
    "file": (),
}
BACKENDS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure",
            "abfs": "azure", "abfss": "azure", "azure": "azure", "file": "file"}
# Without these delta-rs cannot even address the store. Credentials are not required: a pod
# may get them from its service account (IRSA, workload identity) instead.
REQUIRED = {"s3": ("AWS_REGION",), "azure": ("AZURE_STORAGE_ACCOUNT_NAME",)}
# Half a key pair is a mistake, not a choice of credentials.
PAIRS = {"s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

WHAT = {
    "RETAIL_ML_HOME": "a volume shared by the code location and run pods (landing files, "
                      "online snapshot, champion pointer, BentoML store)",
    "RETAIL_ML_DELTA_ROOT": "the Delta tables' root, e.g. s3://bucket/retail-ml/delta",
    "RETAIL_ML_MLFLOW_URI": "the MLflow tracking server, e.g. http://mlflow:5000 "
                            "(MLFLOW_TRACKING_URI is read too)",
    "AWS_REGION": "the S3 bucket's region",
    "AZURE_STORAGE_ACCOUNT_NAME": "the storage account holding the container",
}


@dataclass(frozen=True)
class ProdConfig:
    delta_root: str
    storage_options: dict[str, str]  # secrets as dg.EnvVar (a str naming the variable)
    mlflow_uri: str
    mlflow_artifact_location: str | None


def backend(root: str) -> str:
    scheme = urlsplit(root).scheme
    if scheme not in BACKENDS:
        raise MissingConfiguration(
            f"RETAIL_ML_DELTA_ROOT={root!r}: expected an object store URI (s3://, gs://, "
            "az://, abfss://) or file:// for a mounted volume")
    return BACKENDS[scheme]


def storage_options(kind: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The storage options for one backend from the variables that are set."""
    import dagster as dg  # here, not at import: the forecaster reads these tables without it
    return {o.key: dg.EnvVar(o.env) if o.secret else environ[o.env]
            for o in OPTIONS[kind] if environ.get(o.env)}


def reader_options(uri: str, environ: Mapping[str, str] | None = None
                   ) -> dict[str, str] | None:
    """Storage options with their values, for a Delta reader outside the Dagster resources
    (the forecaster, `retail-ml reproduce`), from this process's environment; None for a
    local path."""
    scheme = urlsplit(uri).scheme
    if scheme not in BACKENDS or BACKENDS[scheme] not in OPTIONS:
        return None
    env = os.environ if environ is None else environ
    return {o.key: env[o.env] for o in OPTIONS[BACKENDS[scheme]] if env.get(o.env)} or None


def missing(kind: str, environ: Mapping[str, str]) -> list[str]:
    absent = [name for name in REQUIRED.get(kind, ()) if not environ.get(name)]
    pair = PAIRS.get(kind, ())
    if any(environ.get(name) for name in pair):
        absent += [name for name in pair if not environ.get(name)]
    return absent


def credentials_in(uri: str) -> bool:
    """A password inside a URI would be shown in the resource config and the run logs."""
    return urlsplit(uri).password is not None


def load_prod_config(environ: Mapping[str, str]) -> ProdConfig:
    mlflow_uri = environ.get("RETAIL_ML_MLFLOW_URI") or environ.get("MLFLOW_TRACKING_URI")
    root = environ.get("RETAIL_ML_DELTA_ROOT", "")
    absent = [name for name in ("RETAIL_ML_HOME", "RETAIL_ML_DELTA_ROOT")
              if not environ.get(name)]
    if not mlflow_uri:
        absent.append("RETAIL_ML_MLFLOW_URI")
    kind = backend(root) if root else None
    if kind is not None:
        absent += missing(kind, environ)
    if absent:
        raise MissingConfiguration(
            "RETAIL_ML_ENV=prod needs these environment variables:\n"
            + "\n".join(f"  {name}: {WHAT.get(name, 'see docs/production.md')}"
                        for name in absent))
    for name, uri in (("RETAIL_ML_DELTA_ROOT", root), ("RETAIL_ML_MLFLOW_URI", mlflow_uri)):
        if credentials_in(uri):
            raise MissingConfiguration(
                f"{name} holds a password: pass credentials in their own variables "
                "(AWS_*, MLFLOW_TRACKING_USERNAME/PASSWORD or PGPASSWORD), never in the URI")
    assert kind is not None and mlflow_uri is not None  # checked above
    return ProdConfig(root, storage_options(kind, environ), mlflow_uri,
                      environ.get("RETAIL_ML_MLFLOW_ARTIFACTS") or None)


def spark_conf(kind: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Spark settings to reach the same object store. No secret: Hadoop's S3A, GCS and ABFS
    connectors read the same credentials from the environment. Their jars (e.g.
    org.apache.hadoop:hadoop-aws) come from RETAIL_ML_SPARK_PACKAGES, fetched at session start,
    or from the image."""
    conf = {}
    if environ.get("RETAIL_ML_SPARK_PACKAGES"):
        conf["spark.jars.packages"] = environ["RETAIL_ML_SPARK_PACKAGES"]
    if kind == "s3":
        conf["spark.hadoop.fs.s3a.endpoint.region"] = environ["AWS_REGION"]
        if environ.get("AWS_ENDPOINT_URL"):  # MinIO and the like address buckets by path
            conf["spark.hadoop.fs.s3a.endpoint"] = environ["AWS_ENDPOINT_URL"]
            conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    return conf


def engine_resources(settings: Settings, kind: str, environ: Mapping[str, str]
                     ) -> dict[str, Any]:
    """The feature engine: Spark (prod's default engine) on the object store's connector."""
    if settings.engine != "spark":
        return {}
    from resources.spark import SparkEngine

    return {"spark": SparkEngine(master=settings.spark_master,
                                 shuffle_partitions=settings.spark_shuffle_partitions,
                                 driver_memory=settings.spark_driver_memory,
                                 conf=spark_conf(kind, environ))}


def prod_resources(settings: Settings, dataset_ref: str,
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    from resources.delta import DeltaStore
    from resources.platform import PlatformSettings
    from resources.tracking import mlflow_tracking

    env = os.environ if environ is None else environ
    config = load_prod_config(env)
    return {
        # The assets find the tracking server through the settings: the same URI as the resource
        "platform": PlatformSettings.from_settings(
            settings.model_copy(update={"mlflow_uri": config.mlflow_uri}), dataset_ref),
        "delta": DeltaStore(root=config.delta_root, storage_options=config.storage_options),
        "mlflow": mlflow_tracking.configured({
            "experiment_name": EXPERIMENT,
            "mlflow_tracking_uri": config.mlflow_uri,
            "artifact_location": config.mlflow_artifact_location,
        }),
        **engine_resources(settings, backend(config.delta_root), env),
    }
