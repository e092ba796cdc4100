"""Serving benchmark: the demand forecaster under `bentoml serve` against a raw ASGI app.

    python -m benchmarks.serving_bench            # 920 series, every variant (~18 min)
    python -m benchmarks.serving_bench --quick    # smoke scale, shipped config only (~1 min)

One script, side by side, on one machine: (a) the raw Starlette app of benchmarks/raw_asgi.py
(same model, same snapshot, same row lookup), (b) the real Bento under `bentoml serve` in its
shipped configuration and in tuning variants set at serve time (BENTOML_CONFIG_OVERRIDES and
environment; a gc.freeze() is emulated, the service's code is never edited), (c) POST
/forecast_batch with 1,000 and 10,000 rows, (d) the ratios.

Throughput is wrk's (closed loop, 32 connections: each sends again when answered); latency at a
fixed rate is benchmarks/openloop.py's (open loop, measured from when each request was due, so
stalls are not hidden by coordinated omission). On 2 cores the server is pinned to CPU 0 and the
load generator to CPU 1, except for the 2-worker variant, which needs both. Every request body
is a real (store, item, date) of the snapshot, cycling over thousands of them. Reports:
benchmarks/results/serving.md and serving.json (results/quick/ with --quick). Method and numbers:
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import serving_profile
from benchmarks.serving_world import WorldScale

RESULTS = Path(__file__).resolve().parent / "results"
PROFILED = ("raw", "shipped", "lean_gc_freeze")  # where their CPU goes (if py-spy is installed)
REPO = RESULTS.parents[1]
TARGET_RATE, TARGET_P99_MS, TARGET_RATIO, TARGET_BATCH = 500.0, 20.0, 0.5, 50_000.0
SERVICE = "demand_forecaster"
# What `make bench` exports (see Makefile); set here too so a direct run measures the same thing.
BASE_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967296",
            "BENTOML_DO_NOT_TRACK": "true"}
WRK_SCRIPT = """
local reqs, i = {}, 0
init = function(args)  -- args: the bodies file (one JSON a line), the path
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("POST", args[2], {["Content-Type"] = "application/json"}, line)
  end
  i = math.random(#reqs)
end
request = function() i = i % #reqs + 1; return reqs[i] end
done = function(s, lat, _)
  local e = s.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_s":%f,"connect":%d,"read":%d,' ..
    '"write":%d,"non_2xx":%d,"timeout":%d,"p50":%f,"p90":%f,"p99":%f,"max":%f,"mean":%f}\\n',
    s.requests, s.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    lat:percentile(50) / 1e3, lat:percentile(90) / 1e3, lat:percentile(99) / 1e3,
    lat.max / 1e3, lat.mean / 1e3))
end
"""


@dataclass(frozen=True)
class Variant:
    """A way of serving: the raw app, or `bentoml serve` with config overrides and env."""

    name: str
    note: str
    raw: str = ""  # the raw app's --matrix; empty for the Bento
    workers: int = 1
    config: dict[str, Any] = field(default_factory=dict)  # services.demand_forecaster.<...>
    env: dict[str, str] = field(default_factory=dict)
    tuning: bool = True  # False: turns a feature off, to show its cost; never "the best"
    freeze_gc: bool = False  # see SITECUSTOMIZE

    @property
    def pinned(self) -> bool:  # one worker: server on CPU 0, load generator on CPU 1
        return self.workers == 1 and len(os.sched_getaffinity(0)) >= 2


LEAN = {"logging": {"access": {"enabled": False}}, "metrics": {"enabled": False},
        "tracing": {"excluded_urls": "forecast,forecast_batch"}}
BENTO_VARIANTS = [  # cumulative: each row adds one change to the one before
    Variant("shipped", "as built: BentoML defaults (1 worker, access log, metrics, tracing), "
            "prediction log on"),
    Variant("no_access_log", "+ access log off", config={"logging": LEAN["logging"]}),
    Variant("no_tracing", "+ OpenTelemetry middleware skips the API routes",
            config={k: LEAN[k] for k in ("logging", "tracing")}),
    Variant("lean", "+ BentoML's request metrics off (the service's own histogram stays)",
            config=LEAN),
    Variant("lean_gc_freeze", "+ gc.freeze() once loaded (a code change, emulated)",
            config=LEAN, freeze_gc=True),
    Variant("lean_2_workers", "+ 2 workers, 1 OpenMP thread each (both cores, shared with the "
            "load generator)", workers=2, config={**LEAN, "workers": 2},
            env={"OMP_NUM_THREADS": "1"}, freeze_gc=True),
    Variant("no_prediction_log", "lean_gc_freeze without the prediction log (a feature, not a "
            "tuning: what it costs)", config=LEAN, env={"RETAIL_ML_PREDICTION_LOG": "off"},
            freeze_gc=True, tuning=False),
    Variant("no_reload", "shipped without hot-swap polling (RETAIL_ML_RELOAD_SECONDS=0: what "
            "looking for a new champion every 5 s costs)", env={"RETAIL_ML_RELOAD_SECONDS": "0"},
            tuning=False),
]
# Emulates `gc.freeze()` at the end of the service's __init__ without editing it: the startup
# heap (modules, the snapshot's row index) leaves the collector's view, so full collections stop
# scanning it. Put on the workers' PYTHONPATH; the benchmark signals them once they are ready.
SITECUSTOMIZE = """import gc, signal
signal.signal(signal.SIGUSR1, lambda *_: gc.freeze())
"""


@dataclass(frozen=True)
class Plan:
    scale: WorldScale
    variants: list[Variant]
    max_s: float  # each throughput run
    fixed_s: float  # each fixed-rate run, after fixed_warmup_s
    fixed_warmup_s: float
    batch_s: float
    batch_sizes: tuple[int, ...]
    warm_s: float  # a throughput run before the measured ones, not reported
    connections: int = 32


def full_plan() -> Plan:
    return Plan(WorldScale(), BENTO_VARIANTS, max_s=15, fixed_s=30, fixed_warmup_s=3,
                batch_s=10, batch_sizes=(1_000, 10_000), warm_s=3)


def quick_plan() -> Plan:
    return Plan(WorldScale(n_stores=4, n_items=25, days=450, max_rounds=20), BENTO_VARIANTS[:1],
                max_s=2, fixed_s=2, fixed_warmup_s=0.5, batch_s=2, batch_sizes=(1_000,),
                warm_s=0)


# --- processes and CPU accounting ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (BentoML's workers are children)."""
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def _busy_cpu() -> float:
    """CPU seconds every process on the machine used so far (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def _prefix(cpu: str | None, nice: int) -> list[str]:
    """Pins to a CPU (taskset) and sets the priority (nice; below 0 needs root)."""
    pin = ["taskset", "-c", cpu] if cpu and shutil.which("taskset") else []
    return pin + (["nice", "-n", str(nice)] if nice else [])


@contextlib.contextmanager
def serving(variant: Variant, world: dict[str, Any], log: Path,
            nice: int = 0) -> Iterator[tuple[int, int]]:
    """Starts the variant's server and yields its port and pid once it answers; stops it."""
    port = _free_port()
    env = {**os.environ, **BASE_ENV, "RETAIL_ML_HOME": world["home"],
           "BENTOML_HOME": world["bentoml_home"], **variant.env}
    env.pop("RETAIL_ML_API_TOKEN", None)
    env.pop("RETAIL_ML_DATASET", None)  # the world's default: the simulated, daily dataset
    if variant.raw:
        cmd = [sys.executable, "-m", "benchmarks.raw_asgi", "--home", world["home"],
               "--model", world["model_dir"], "--matrix", variant.raw, "--port", str(port)]
        ready = "/ping"
    else:
        if variant.config:
            env["BENTOML_CONFIG_OVERRIDES"] = json.dumps({"services": {SERVICE: variant.config}})
        if variant.freeze_gc:
            hook = log.parent / "gc_freeze"
            hook.mkdir(exist_ok=True)
            (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook),
                                                              env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "bentoml", "serve", world["bento_tag"], "--host",
               "127.0.0.1", "--port", str(port)]
        ready = "/readyz"
        shutil.rmtree(Path(world["home"]) / "predictions", ignore_errors=True)
    cmd = _prefix("0" if variant.pinned else None, nice) + cmd
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{variant.name}: server exited; log {log}:\n"
                                   f"{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant.name}: not ready in 180 s; log {log}")
            time.sleep(0.3)
        if variant.freeze_gc:
            for worker in _worker_pids(proc.pid):
                os.kill(worker, signal.SIGUSR1)
            time.sleep(0.5)
        yield port, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: BentoML's workers too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _load(cmd: list[str], server_pid: int, pinned: bool, nice: int) -> dict[str, Any]:
    """Runs a load generator to its end; adds the CPU it, the server and everything else on the
    machine used meanwhile (others_cores: other tenants of a shared machine)."""
    cmd = _prefix("1" if pinned else None, nice) + cmd
    _children_cpu()
    server0, busy0, t0 = _tree_cpu(server_pid), _busy_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **BASE_ENV})
    wall = time.perf_counter() - t0
    server, generator = _tree_cpu(server_pid) - server0, _children_cpu()
    others = max(0.0, _busy_cpu() - busy0 - server - generator)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    match = re.search(r"WRKJSON (\{.*\})", done.stdout)
    result = json.loads(match.group(1) if match else done.stdout.strip().splitlines()[-1])
    return {**result, "server_cpu_s": server, "generator_cpu_s": generator,
            "others_cores": others / wall, "wall_s": wall}


_children_total = [0.0]


def _children_cpu() -> float:
    """CPU seconds of the child processes reaped since the last call (the load generator)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    delta, _children_total[0] = total - _children_total[0], total
    return delta


# --- load ---------------------------------------------------------------------------------------


class Loads:
    """Throughput runs with wrk (the openloop module's closed loop where wrk is missing) and
    fixed-rate runs with the openloop module."""

    def __init__(self, work: Path, nice: int = 0) -> None:
        self.wrk, self.nice = shutil.which("wrk"), nice
        self.script = work / "post.lua"
        self.script.write_text(WRK_SCRIPT)

    @property
    def generator(self) -> str:
        return "wrk" if self.wrk else "benchmarks.openloop --closed"

    def throughput(self, port: int, pid: int, path: str, bodies: Path, connections: int,
                   seconds: float, pinned: bool) -> dict[str, Any]:
        if self.wrk:
            cmd = [self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                   "--timeout", "10s", "-s", str(self.script), f"http://127.0.0.1:{port}", "--",
                   str(bodies), path]
            r = _load(cmd, pid, pinned, self.nice)
            r["errors"] = sum(r.pop(k) for k in ("connect", "read", "write", "timeout"))
        else:
            cmd = [sys.executable, "-m", "benchmarks.openloop", "--port", str(port), "--path",
                   path, "--bodies", str(bodies), "--closed", str(connections), "--duration",
                   str(seconds)]
            r = _load(cmd, pid, pinned, self.nice)
            r.update(r.pop("latency_ms"))
        r["rps"] = r["requests"] / r["duration_s"]
        r["server_cpu_ms_per_request"] = r["server_cpu_s"] / max(r["requests"], 1) * 1e3
        r["generator_core_share"] = r["generator_cpu_s"] / r["wall_s"]
        return r

    def fixed(self, port: int, pid: int, path: str, bodies: Path, rate: float, seconds: float,
              warmup: float, pinned: bool) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "benchmarks.openloop", "--port", str(port), "--path", path,
               "--bodies", str(bodies), "--rate", str(rate), "--duration", str(seconds),
               "--warmup", str(warmup)]
        r = _load(cmd, pid, pinned, self.nice)
        sent = r["requests"] + r["requests"] / seconds * warmup  # the warm-up's too
        r["server_cpu_ms_per_request"] = r["server_cpu_s"] / max(sent, 1) * 1e3
        return r


def write_bodies(features_table: Path, work: Path, sizes: tuple[int, ...]) -> dict[str, Path]:
    """Request bodies over real snapshot keys, shuffled: single forecasts cycle over 4,000 of
    them, each batch size over 4 different batches."""
    import polars as pl

    keys = pl.read_delta(str(features_table)).select("store_id", "item_id", "date").rows()
    rng = random.Random(7)
    rng.shuffle(keys)
    row = lambda k: {"store_id": k[0], "item_id": k[1], "date": k[2].isoformat()}  # noqa: E731
    files = {"single": work / "single.jsonl", "ping": work / "ping.jsonl"}
    files["single"].write_text("".join(json.dumps(row(k)) + "\n" for k in keys[:4000]))
    files["ping"].write_text("{}\n")
    for n in sizes:
        files[f"batch_{n}"] = work / f"batch_{n}.jsonl"
        files[f"batch_{n}"].write_text("".join(
            json.dumps({"requests": [row(k) for k in rng.choices(keys, k=n)]}) + "\n"
            for _ in range(4)))
    files["parity"] = work / "parity.json"
    files["parity"].write_text(json.dumps({"requests": [row(k) for k in keys[:200]]}))
    return files


def _units(port: int, body: Path) -> list[float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/forecast_batch",
                                     data=body.read_bytes(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return [f["units"] for f in json.loads(response.read())]


def _worker_pids(pid: int) -> list[int]:
    """The processes answering requests: BentoML's workers, or the raw app itself."""
    import psutil

    workers = [p.pid for p in psutil.Process(pid).children(recursive=True)
               if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
    return workers or [pid]


def measure(variant: Variant, port: int, pid: int, files: dict[str, Path], plan: Plan,
            loads: Loads, say: Callable[[str], None], profile: bool) -> dict[str, Any]:
    pinned = variant.pinned
    out: dict[str, Any] = {"variant": asdict(variant), "pinned": pinned,
                           "units": _units(port, files["parity"])}
    if plan.warm_s:
        loads.throughput(port, pid, "/forecast", files["single"], plan.connections, plan.warm_s,
                         pinned)
    out["max"] = loads.throughput(port, pid, "/forecast", files["single"], plan.connections,
                                  plan.max_s, pinned)
    out["fixed"] = loads.fixed(port, pid, "/forecast", files["single"], TARGET_RATE,
                               plan.fixed_s, plan.fixed_warmup_s, pinned)
    m, f = out["max"], out["fixed"]
    say(f"  {variant.name:24s} max {m['rps']:7.0f} rps (p99 {m['p99']:6.1f} ms, "
        f"{m['server_cpu_ms_per_request']:.2f} CPU-ms/req) | at {TARGET_RATE:.0f} rps: p50 "
        f"{f['latency_ms']['p50']:5.1f} p99 {f['latency_ms']['p99']:6.1f} ms "
        f"| others {m['others_cores']:.2f} cores")
    out["batch"] = {}
    for n in plan.batch_sizes:
        b = loads.throughput(port, pid, "/forecast_batch", files[f"batch_{n}"], 2,
                             plan.batch_s, pinned)
        b["forecasts_per_s"] = b["rps"] * n
        out["batch"][str(n)] = b
        say(f"  {'':24s} batch {n:>6,}: {b['forecasts_per_s']:9,.0f} forecasts/s "
            f"(p50 {b['p50']:.0f} ms per batch)")
    if profile:  # one more throughput run, sampled (sampling costs the worker a little)
        recording = serving_profile.record(_worker_pids(pid)[0], plan.max_s)
        loads.throughput(port, pid, "/forecast", files["single"], plan.connections,
                         plan.max_s, pinned)
        out["profile"] = serving_profile.shares(recording)
    return out


# --- the run and its report ---------------------------------------------------------------------


def default_cache() -> Path:
    home = os.environ.get("RETAIL_ML_HOME")
    if home:
        return Path(home).expanduser().resolve() / "bench" / "serving"
    return Path(tempfile.gettempdir()) / "retail_ml_bench" / "serving"


def ensure_world(scale: WorldScale, cache: Path) -> dict[str, Any]:
    """In its own process: this one never imports xgboost, dagster or BentoML."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.serving_world",
                           json.dumps(asdict(scale)), str(cache)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **BASE_ENV})
    if done.returncode != 0:
        raise RuntimeError(f"building the serving world failed:\n{done.stderr[-4000:]}")
    world = json.loads(done.stdout.strip().splitlines()[-1])
    name, version = world["model_tag"].split(":")
    world["model_dir"] = str(Path(world["bentoml_home"]) / "models" / name / version)
    return world


def raw_variants(quick: bool) -> list[Variant]:
    from benchmarks.raw_asgi import MATRICES

    variants = [Variant("raw", f"Starlette + uvicorn, 1 worker, the service's input encoding "
                        f"({MATRICES[0]})", raw=MATRICES[0])]
    if not quick and len(MATRICES) > 1:
        variants.append(Variant("raw_pandas", "the raw app on `to_matrix`'s pandas frame, as "
                                "the service was before `to_array`", raw="pandas"))
    return variants


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    raw = runs["raw"]
    rows = {}
    for name, r in runs.items():
        f = r["fixed"]["latency_ms"]
        rows[name] = {
            "note": r["variant"]["note"], "pinned": r["pinned"],
            "tuning": r["variant"]["tuning"] and not r["variant"]["raw"],
            "max_rps": r["max"]["rps"], "max_p50_ms": r["max"]["p50"],
            "max_p99_ms": r["max"]["p99"], "ratio_to_raw": r["max"]["rps"] / raw["max"]["rps"],
            "cpu_ms_per_request": r["max"]["server_cpu_ms_per_request"],
            # what each forecast costs in CPU, which other tenants of the machine disturb less
            # than they disturb rps: raw's CPU per forecast over this one's
            "cpu_ratio_to_raw": raw["max"]["server_cpu_ms_per_request"]
            / r["max"]["server_cpu_ms_per_request"],
            "fixed_p50_ms": f["p50"], "fixed_p99_ms": f["p99"], "fixed_p999_ms": f["p999"],
            "fixed_max_ms": f["max"], "fixed_achieved_rps": r["fixed"]["achieved_rps"],
            # the server fell behind the rate: the latencies grew with the run, not a tail
            "fixed_overloaded": r["fixed"]["achieved_rps"] < 0.95 * TARGET_RATE
            or r["fixed"]["unanswered"] > 0,
            "others_cores": max(r["max"]["others_cores"], r["fixed"]["others_cores"]),
            "batch_forecasts_per_s": {n: b["forecasts_per_s"] for n, b in r["batch"].items()},
            "parity_max_abs_diff": r["parity_max_abs_diff"]}
    bad = sum(x.get("non_2xx", 0) + x.get("errors", 0)
              for r in runs.values() for x in [r["max"], r["fixed"], *r["batch"].values(),
                                               *(r[k] for k in ("ping_max", "ping_fixed")
                                                 if k in r)])
    tuned = [n for n, v in rows.items() if v["tuning"] and n != "shipped"]
    best = min(tuned, key=lambda n: rows[n]["fixed_p99_ms"]) if tuned else "shipped"
    return {"variants": rows, "best": best, "non_2xx_or_errors": bad}


def headline(result: dict[str, Any]) -> str:
    v, best = result["summary"]["variants"], result["summary"]["best"]
    ship = v["shipped"]
    batch = max(ship["batch_forecasts_per_s"].values())
    text = (f"/forecast p99 {ship['fixed_p99_ms']:.1f} ms at {TARGET_RATE:.0f} rps, "
            f"{ship['max_rps']:.0f} rps = {ship['ratio_to_raw']:.2f}x raw ASGI, batch "
            f"{batch / 1e3:.0f}k forecasts/s (shipped config)")
    if best != "shipped":
        b = v[best]
        batch = max(b["batch_forecasts_per_s"].values())
        text += (f"; {best}: p99 {b['fixed_p99_ms']:.1f} ms, {b['max_rps']:.0f} rps = "
                 f"{b['ratio_to_raw']:.2f}x, {batch / 1e3:.0f}k/s")
    return text + f"; {result['summary']['non_2xx_or_errors']} non-2xx"


def render(result: dict[str, Any]) -> str:
    w, m, s = result["world"], result["machine"], result["summary"]
    v, best, raw = s["variants"], s["best"], result["runs"]["raw"]
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    ship, top = v["shipped"], v[best]
    batch = lambda r: max(r["batch_forecasts_per_s"].values())  # noqa: E731
    lines = [
        "# Serving benchmark: the demand forecaster under `bentoml serve` vs raw ASGI", "",
        f"Generated {result['generated']} by `python -m benchmarks.serving_bench "
        f"{' '.join(result['argv'])}`. Method and discussion: benchmarks/README.md.", "",
        f"World: {w['series']:,} active series (simulated, {w['scale']['n_stores']} stores x "
        f"{w['scale']['n_items']} items, {w['scale']['days']} days), snapshot "
        f"`gold/forecast_features` {w['snapshot_rows']:,} rows (H = 28), booster "
        f"{w['trees']} trees ({w['objective']}, {w['n_features']} features). Bento "
        f"`{w['bento_tag']}` built from the working tree (sources hash {w['code_hash']}).", "",
        "## Targets", "",
        f"| target | shipped | best tuning (`{best}`) |", "|---|---:|---:|",
        f"| POST /forecast p99 <= {TARGET_P99_MS:.0f} ms at {TARGET_RATE:.0f} rps "
        f"| {ship['fixed_p99_ms']:.1f} ms: {yes(ship['fixed_p99_ms'] <= TARGET_P99_MS)} "
        f"| {top['fixed_p99_ms']:.1f} ms: {yes(top['fixed_p99_ms'] <= TARGET_P99_MS)} |",
        f"| throughput >= {TARGET_RATIO}x the raw ASGI app | {ship['ratio_to_raw']:.2f}x: "
        f"{yes(ship['ratio_to_raw'] >= TARGET_RATIO)} | {top['ratio_to_raw']:.2f}x: "
        f"{yes(top['ratio_to_raw'] >= TARGET_RATIO)} |",
        f"| the same in CPU per forecast (x raw CPU) | {ship['cpu_ratio_to_raw']:.2f}x: "
        f"{yes(ship['cpu_ratio_to_raw'] >= TARGET_RATIO)} | {top['cpu_ratio_to_raw']:.2f}x: "
        f"{yes(top['cpu_ratio_to_raw'] >= TARGET_RATIO)} |",
        f"| POST /forecast_batch >= {TARGET_BATCH:,.0f} forecasts/s | {batch(ship):,.0f}: "
        f"{yes(batch(ship) >= TARGET_BATCH)} | {batch(top):,.0f}: "
        f"{yes(batch(top) >= TARGET_BATCH)} |",
        f"| non-2xx responses or errors, all runs | {s['non_2xx_or_errors']} | |", "",
        "## POST /forecast", "",
        f"**max**: {result['generator']}, {result['plan']['connections']} connections, closed "
        f"loop, {result['plan']['max_s']:g} s. **at {TARGET_RATE:.0f} rps**: open loop, "
        f"{result['plan']['fixed_s']:g} s after {result['plan']['fixed_warmup_s']:g} s of "
        "warm-up, latency from each request's due time. CPU = the server's processes' CPU "
        "time per forecast at max, and raw's over it (x raw CPU: the throughput ratio if "
        "each had a core to itself). others = cores busy with other processes meanwhile.", "",
        "| server | what | max rps | x raw | p50 / p99 ms at max | CPU ms | x raw CPU | "
        f"p50 at {TARGET_RATE:.0f} | p99 | p99.9 | max ms | others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in v.items():
        lines.append(
            f"| {name} | {r['note']}{'' if r['pinned'] else ' (not pinned)'} "
            f"| {r['max_rps']:,.0f} | {r['ratio_to_raw']:.2f} "
            f"| {r['max_p50_ms']:.1f} / {r['max_p99_ms']:.1f} | {r['cpu_ms_per_request']:.2f} "
            f"| {r['cpu_ratio_to_raw']:.2f} "
            f"| {r['fixed_p50_ms']:.1f} | {r['fixed_p99_ms']:.1f}"
            + (f" (overloaded: {r['fixed_achieved_rps']:.0f} rps answered)"
               if r["fixed_overloaded"] else "") + f" | {r['fixed_p999_ms']:.1f} "
            f"| {r['fixed_max_ms']:.1f} | {r['others_cores']:.2f} |")
    lines += ["", "## POST /forecast_batch", "",
              f"{result['generator']}, 2 connections, closed loop, "
              f"{result['plan']['batch_s']:g} s per size; bodies of real keys.", "",
              "| server | rows | forecasts/s | p50 ms per batch | p99 ms | CPU ms per 1k |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["runs"].items():
        for n, b in r["batch"].items():
            per_1k = b["server_cpu_ms_per_request"] / int(n) * 1e3
            lines.append(f"| {name} | {int(n):,} | {b['forecasts_per_s']:,.0f} | {b['p50']:.0f} "
                         f"| {b['p99']:.0f} | {per_1k:.1f} |")
    profiles = {n: r for n, r in result["runs"].items() if r.get("profile")}
    if profiles:
        owners = list(dict.fromkeys(o for r in profiles.values() for o in r["profile"]))
        cpu = {n: v[n]["cpu_ms_per_request"] for n in profiles}
        lines += ["", "## Where a worker's CPU goes", "",
                  "py-spy `--gil` samples of the worker during one more max run, by owner of the "
                  "innermost specific frame; each share of samples times the server's CPU ms per "
                  "forecast at max (approximate: C code running without the GIL, such as the "
                  "trees themselves and socket calls, is not sampled).", "",
                  "| owner | " + " | ".join(f"{n} ms (share)" for n in profiles) + " |",
                  "|---|" + "---:|" * len(profiles)]
        for o in owners:
            lines.append(f"| {o} | " + " | ".join(
                f"{r['profile'].get(o, 0) * cpu[n]:.3f} ({r['profile'].get(o, 0):.0%})"
                for n, r in profiles.items()) + " |")
        lines.append("| **all (CPU ms per forecast)** | " + " | ".join(
            f"**{cpu[n]:.3f}**" for n in profiles) + " |")
    pm, pf = raw["ping_max"], raw["ping_fixed"]
    fastest = max(r["max_rps"] for r in v.values())
    gen_share = max(r["max"]["generator_core_share"] for r in result["runs"].values())
    lines += [
        "", "## The load generators", "",
        f"- Ceiling: {result['generator']} against the raw app's `/ping`: {pm['rps']:,.0f} rps, "
        f"{pm['rps'] / fastest:.1f}x the fastest /forecast above. In the /forecast max runs it "
        f"used at most {gen_share:.0%} of a core.",
        f"- Floor: the open-loop generator at {TARGET_RATE:.0f} rps against `/ping`: p50 "
        f"{pf['latency_ms']['p50']:.2f}, p99 {pf['latency_ms']['p99']:.2f}, max "
        f"{pf['latency_ms']['max']:.1f} ms; requests sent late by p99 "
        f"{pf['send_late_ms']['p99']:.2f} ms (its timer); it used {pf['generator_cpu_share']:.0%}"
        " of a core. Latencies below that are not resolvable here.",
        f"- Layout: {m['cores_usable']} cores; " + (
            "servers with one worker on CPU 0 (`taskset`, workers inherit it), load generators "
            "on CPU 1; the 2-worker variant and its generator share both cores."
            if m['cores_usable'] >= 2 else "one core: server and generator share it.")
        + (f" Servers and generators ran at nice {result['nice']}." if result["nice"] else ""),
        "",
        "## Machine", "",
        f"{m['cores']} cores ({m['cores_usable']} usable), {m['cpu']}, python {m['python']}, "
        f"bentoml {m['bentoml']}, uvicorn {m['uvicorn']}, xgboost {m['xgboost']}. 1-minute "
        f"load average before each server: {result['load']}. The machine may be shared: "
        "`others` above is the CPU other processes took during each run.", ""]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    import platform
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown")
    return {"cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(),
            **{p: version(p) for p in ("bentoml", "uvicorn", "starlette", "xgboost")},
            "wrk": shutil.which("wrk") or ""}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke scale, shipped config only")
    parser.add_argument("--variants", help="comma-separated Bento variants (default: all)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the world is kept (default $RETAIL_ML_HOME/bench/serving)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default benchmarks/results, or results/quick)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy profiles (taken when py-spy is on PATH)")
    parser.add_argument("--nice", type=int, default=0,
                        help="priority of servers and load generators (e.g. -10 as root, so "
                             "that other work on a shared machine disturbs the numbers less)")
    args = parser.parse_args(argv)
    plan = quick_plan() if args.quick else full_plan()
    if args.variants:
        names = args.variants.split(",")
        plan = Plan(**{**plan.__dict__, "variants": [x for x in BENTO_VARIANTS if x.name in names]})
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    cache = (args.cache or default_cache()).resolve()
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"serving benchmark: world {plan.scale.key}, cache {cache}")
    world = ensure_world(plan.scale, cache)
    say(f"  world: {world['series']:,} series, {world['snapshot_rows']:,} snapshot rows, "
        f"{world['trees']} trees; Bento {world['bento_tag']}")
    runs: dict[str, dict[str, Any]] = {}
    load_avg = []
    with tempfile.TemporaryDirectory(prefix="serving_bench_") as tmp:
        files = write_bodies(Path(world["home"]) / "delta" / "gold" / "forecast_features",
                             Path(tmp), plan.batch_sizes)
        loads = Loads(Path(tmp), args.nice)
        if not loads.wrk:
            say("  wrk not found (make bench installs it): throughput with the openloop module")
        for variant in [*raw_variants(args.quick), *plan.variants]:
            load_avg.append(round(os.getloadavg()[0], 1))
            with serving(variant, world, logs / f"{variant.name}.log", args.nice) as (port, pid):
                profile = (not args.quick and not args.no_profile and variant.name in PROFILED
                           and serving_profile.available() is not None)
                run = measure(variant, port, pid, files, plan, loads, say, profile)
                if variant.name == "raw":
                    run["ping_max"] = loads.throughput(port, pid, "/ping", files["ping"],
                                                       plan.connections, plan.max_s, True)
                    run["ping_fixed"] = loads.fixed(port, pid, "/ping", files["ping"],
                                                    TARGET_RATE, plan.fixed_s,
                                                    plan.fixed_warmup_s, True)
            units = run.pop("units")
            reference = runs["raw"]["units"] if runs else units
            run["parity_max_abs_diff"] = max(abs(a - b) for a, b in zip(units, reference,
                                                                        strict=True))
            runs[variant.name] = {**run, "units": units} if variant.name == "raw" else run
    runs["raw"].pop("units")
    result: dict[str, Any] = {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv, "plan": asdict(plan), "world": world,
        "machine": machine_info(), "generator": loads.generator, "load": load_avg,
        "nice": args.nice,
        "runs": runs, "summary": summarize(runs)}
    diffs = [r["parity_max_abs_diff"] for r in runs.values()]
    # the same model on the same rows: every server must give the raw app's units (run.py fails
    # the run otherwise), and no request may fail
    result["parity"] = {"equal": max(diffs) <= 1e-6 and result["summary"]["non_2xx_or_errors"]
                        == 0, "max_abs_diff_units": max(diffs)}
    result["headline"] = headline(result)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "serving.md", out / "serving.json"
    md.write_text(render(result))
    result["reports"] = [str(md), str(js)]
    js.write_text(json.dumps(result, indent=2, default=str))
    say(f"  {result['headline']}\n  report: {md}\n  data:   {js}")
    return result


if __name__ == "__main__":
    main()
