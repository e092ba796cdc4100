"""The soak run at 30 s: a real `bentoml serve` under 200 rps while the champion pointer moves
twice (to a newer model and back). No request may fail, both swaps must show in the answers,
and the server's RSS must stay flat."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.bento_world import BentoWorld, bento_server
from tests.e2e.servers import wait_for_bento

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def test_champion_swaps_under_load_fail_no_request(bento_world: BentoWorld,
                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"  # a copy: the pointer it publishes is this server's alone
    shutil.copytree(bento_world.home, home, ignore=shutil.ignore_patterns("bentoml", "dagster"))
    env = {**bento_world.env, "RETAIL_ML_HOME": str(home), "RETAIL_ML_RELOAD_SECONDS": "0.5"}
    first, second = bento_world.built["model_tag"], bento_world.newer["model_tag"]
    with bento_server(bento_world.built["bento_tag"], env, home, tmp_path / "serve.log") as (
            url, proc):
        wait_for_bento(url, proc, tmp_path / "serve.log")
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.soak", "--url", url, "--pid", str(proc.pid),
             "--duration", "30", "--rate", "200", "--models", f"{first},{second}",
             "--out", str(tmp_path / "soak.json")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        report = json.loads((tmp_path / "soak.json").read_text())
        assert done.returncode == 0, (done.stdout, done.stderr[-3000:], report)
        assert report["failed"] == 0 and report["ok"] == report["sent"] >= 0.95 * 200 * 30
        assert [s["to"] for s in report["swaps"]] == [second, first]
        assert all(0 <= s["first_answer_after_s"] < 5 for s in report["swaps"]), report["swaps"]
        assert report["rss_mb"]["growth"] <= 50, report["rss_mb"]
        # the pointer was restored: the server ends on the model it started with
        assert requests.get(f"{url}/model", timeout=30).json()["model_tag"] == first
