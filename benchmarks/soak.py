"""Soak run: steady load on a real forecaster while the champion is swapped, then the verdict.

    python -m benchmarks.soak                          # make soak: 10 min at 200 rps, 2 swaps
    python -m benchmarks.soak --duration 30 --url http://127.0.0.1:3001

Without --url it starts `bentoml serve demand_forecaster:latest` itself (on RETAIL_ML_HOME,
as `make serve` does) and stops it at the end. Load is open loop: request i is due at
start + i/rate whatever happened before, and its latency is measured from when it was due, so
a stalled server shows up as latency instead of as fewer requests. Nine in ten requests are
single forecasts, one in ten a batch of 50, over keys drawn from the served snapshot.

At a third and two thirds of the run the champion pointer (RETAIL_ML_HOME/serving) moves to
the other of two models: by default the current champion and a copy of it saved under a new
tag (a real reload, the same forecasts); --models A,B names two. Passes when no request
failed, every swap was seen in responses, and RSS (server and workers) stayed flat: the median
of the last fifth within --rss-tolerance-mb of the median after warm-up (the first fifth).
The pointer is restored at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import polars as pl
import psutil

from ml_assets.deployment.pointer import POINTER, publish_champion, read_champion
from resources.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 50


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    # each swap: to which model, when (s into the run), and when its first answer came back
    swaps: list[dict] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


async def _one(session: aiohttp.ClientSession, url: str, body: dict, batch: bool, due: float,
               start: float, tally: Tally) -> None:
    route = "/forecast_batch" if batch else "/forecast"
    tally.sent += 1
    try:
        async with session.post(url + route, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                tally.fail(f"{route} {resp.status}: {str(data)[:200]}")
                return
    except (TimeoutError, aiohttp.ClientError, ValueError) as error:
        tally.fail(f"{route} {type(error).__name__}: {error}")
        return
    now = time.perf_counter()
    tally.ok += 1
    tally.latencies_ms.append((now - due) * 1000)
    tags = {a["model_tag"] for a in (data if batch else [data])}
    for swap in tally.swaps:  # the first answer from the new model after its swap
        if (swap["first_answer_after_s"] is None and swap["to"] in tags
                and now - start >= swap["at_s"]):
            swap["first_answer_after_s"] = round(now - start - swap["at_s"], 2)


def _rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


async def _sample_rss(pid: int, every: float, until: float, out: list[tuple[float, float]],
                      start: float) -> None:
    while time.perf_counter() < until:
        out.append((time.perf_counter() - start, _rss_mb(pid)))
        await asyncio.sleep(every)


async def soak(url: str, keys: list[dict], rate: float, duration: float, swaps: list[str],
               serving_dir: Path, server_pid: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    tally, rss = Tally(), []
    start = time.perf_counter()
    swap_at = [start + duration * (i + 1) / (len(swaps) + 1) for i in range(len(swaps))]
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sampler = asyncio.create_task(_sample_rss(server_pid, 1.0, start + duration, rss, start))
        tasks: set[asyncio.Task] = set()
        i = 0
        while (due := start + i / rate) < start + duration:
            if swap_at and due >= swap_at[0]:
                swap_at.pop(0)
                tag = swaps[len(tally.swaps)]
                tally.swaps.append({"to": tag, "at_s": round(time.perf_counter() - start, 2),
                                    "first_answer_after_s": None})
                publish_champion(serving_dir, tag, "soak", "soak", reason="soak")
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            batch = rng.random() < 0.1
            body = {"requests": rng.sample(keys, BATCH)} if batch else rng.choice(keys)
            task = asyncio.create_task(_one(session, url, body, batch, due, start, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
        await sampler
    return _verdict(tally, rss, tally.swaps, rate, duration)


def _verdict(tally: Tally, rss: list[tuple[float, float]], swaps: list[dict], rate: float,
             duration: float) -> dict:
    lat = sorted(tally.latencies_ms)
    fifth = max(1, len(rss) // 5)
    early = statistics.median(r for _, r in rss[:fifth])
    late = statistics.median(r for _, r in rss[-fifth:])
    quantile = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None  # noqa: E731
    return {"rate": rate, "duration_s": duration, "sent": tally.sent, "ok": tally.ok,
            "failed": sum(tally.failures.values()), "failures": tally.failures,
            "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)},
            "swaps": swaps, "swaps_seen": all(s["first_answer_after_s"] is not None
                                              for s in swaps),
            "rss_mb": {"after_warmup": round(early, 1), "end": round(late, 1),
                       "growth": round(late - early, 1), "peak": round(max(r for _, r in rss), 1),
                       "samples": [[round(t, 1), round(r, 1)] for t, r in rss]}}


def _copy_of(tag: str) -> str:
    """The model under `tag` saved again under a new tag (same booster, labels, metadata)."""
    import bentoml

    model = bentoml.models.get(tag)
    booster = bentoml.xgboost.load_model(model)
    copy = bentoml.xgboost.save_model(model.tag.name, booster, labels=dict(model.info.labels),
                                      metadata=dict(model.info.metadata))
    return str(copy.tag)


def _wait_ready(url: str, proc: psutil.Popen, timeout: float = 180) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bentoml serve exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    sys.exit(f"bentoml serve not ready within {timeout} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running forecaster (default: start one on port 3002)")
    parser.add_argument("--pid", type=int, help="its server's pid, for RSS (with --url)")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--models", help="two model tags to swap between (A,B): to B, back to A")
    parser.add_argument("--rss-tolerance-mb", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)

    import requests

    settings = load_settings()
    proc = None
    url = args.url
    if url is None:
        url = "http://127.0.0.1:3002"
        proc = psutil.Popen([sys.executable, "-m", "bentoml", "serve",
                             "demand_forecaster:latest", "--port", "3002"],
                            stdout=open(settings.home / "soak-serve.log", "w"),
                            stderr=subprocess.STDOUT)
        _wait_ready(url, proc)
    pid = proc.pid if proc else args.pid
    if pid is None:
        sys.exit("--pid: the server's pid is needed to watch its RSS")
    saved = read_champion(settings.serving_dir)
    try:
        info = requests.get(f"{url}/model", timeout=30).json()
        first, second = (args.models.split(",") if args.models
                         else (info["model_tag"], _copy_of(info["model_tag"])))
        keys = pl.read_delta(str(settings.delta_root / info["features"]["table"]),
                             version=info["features"]["version"]).select(
            "store_id", "item_id", pl.col("date").cast(pl.Utf8)).to_dicts()
        report = asyncio.run(soak(url, keys, args.rate, args.duration, [second, first],
                                  settings.serving_dir, pid))
    finally:
        if saved is None:
            (settings.serving_dir / POINTER).unlink(missing_ok=True)
        else:
            publish_champion(settings.serving_dir, saved.model_tag, saved.mlflow_version,
                             saved.bento_tag, reason=saved.reason)
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    report["passed"] = (report["failed"] == 0 and report["swaps_seen"]
                        and report["rss_mb"]["growth"] <= args.rss_tolerance_mb)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    lat, mem = report["latency_ms"], report["rss_mb"]
    print(f"soak {args.duration:.0f} s at {args.rate:.0f} rps: {report['ok']}/{report['sent']} "
          f"ok, {report['failed']} failed; p50 {lat['p50']} ms, p99 {lat['p99']} ms; swaps "
          f"{[(s['at_s'], s['first_answer_after_s']) for s in report['swaps']]}; RSS "
          f"{mem['after_warmup']} -> {mem['end']} MB (peak {mem['peak']}): "
          f"{'PASSED' if report['passed'] else 'FAILED'}  ({args.out})")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
