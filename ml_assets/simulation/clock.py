"""When the simulated world's clock moves past the machine's, the partitions follow it only after
the code location reloads (Dagster builds a partitions definition once per load). `make dev`
records its webserver in DAGSTER_HOME/webserver.json, so `retail-ml simulate` can ask it."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from resources.settings import Settings

WEBSERVER_FILE = "webserver.json"
LOCATION = "ml_assets.definitions"  # workspace.yaml's python_module


def reload_code_location(settings: Settings, timeout: int = 120) -> str:
    """Reloads the running webserver's code location; returns one line saying what happened."""
    path = settings.dagster_home / WEBSERVER_FILE
    if not path.exists():
        return "no Dagster webserver recorded (make dev): its partitions follow on its next start"
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    url = urlsplit(json.loads(path.read_text())["url"])
    try:
        client = DagsterGraphQLClient(url.hostname or "127.0.0.1", port_number=url.port,
                                      timeout=timeout)
        info = client.reload_repository_location(LOCATION)
    except (DagsterGraphQLClientError, OSError) as exc:
        return (f"the Dagster webserver at {url.geturl()} did not answer ({type(exc).__name__}):"
                f" reload the code location there (Deployment > Reload) to see the new days")
    if info.failure_type:
        return f"reloading {LOCATION} at {url.geturl()} failed: {info.message}"
    return f"reloaded {LOCATION} at {url.geturl()}: its partitions now reach the world's clock"
