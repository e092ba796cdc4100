"""A taken port stops `make serve`, `make dev` and `make mlflow` with one line naming the port
and a free one to pass as PORT=, before anything heavy starts, and without a traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another server is listening on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize("target", ["serve", "dev", "mlflow"])
def test_busy_port_is_one_clear_line(target: str, busy_port: int, tmp_path: Path) -> None:
    # BENTOML_HOME and DAGSTER_HOME unset: the Makefile derives them from RETAIL_ML_HOME
    env = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "DAGSTER_HOME")}
    env["RETAIL_ML_HOME"] = str(tmp_path / "home")
    # The check comes before the server: a server started by mistake would block until the
    # timeout, failing the test.
    done = subprocess.run(["make", target, f"PORT={busy_port}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    (line,) = [ln for ln in done.stderr.splitlines() if f"port {busy_port}" in ln]
    suggested = re.fullmatch(
        rf"port {busy_port} is in use \(another server\?\): pick another with "
        rf"`make {target} PORT=(\d+)`", line)
    assert suggested is not None, line
    with socket.socket() as s:  # the suggestion is a port a server could take
        s.bind(("127.0.0.1", int(suggested.group(1))))
