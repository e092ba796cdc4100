"""Helpers for the e2e tests that start real servers (dagster dev, bentoml serve)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Stops a server started in its own session, with the workers it runs as children."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, what: str,
                  timeout: float = 180) -> None:
    """Until `url` answers 200; fails with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or busy starting its worker
            pass
        time.sleep(1)
    pytest.fail(f"{what} not ready within {timeout} s:\n{log.read_text()[-4000:]}")


def wait_for_bento(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    wait_for_http(f"{url}/readyz", proc, log, "bentoml serve", timeout)
