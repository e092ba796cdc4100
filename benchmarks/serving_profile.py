"""Where a server worker's CPU goes under load: py-spy samples, grouped by owner.

py-spy (`pip install py-spy`; optional, not a project dependency) samples the worker with
`--gil`, so only the thread running Python counts: waiting threads and time the OS gave to other
processes do not. Each sample goes to the innermost frame with a specific owner (the service's
code, XGBoost's Python wrapper, a BentoML middleware...); generic frames (numpy, json, asyncio,
inspect) count for the owner that called them, or for themselves at the top of the loop.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

# (owner, fragments of "function (file:line)" that mark it), first match wins within a frame
OWNERS = [
    ("model: XGBoost inplace_predict, Python side", ("xgboost/", "predict_inplace")),
    ("service: prediction log", ("prediction_log.py",)),
    ("service: edge middleware (auth, histogram, error bodies)", ("demand_forecaster/middleware",)),
    ("service: handler, row lookup, Forecast objects", ("bentos/", "benchmarks/raw_asgi")),
    ("BentoML: tracing (OpenTelemetry middleware, spans)",
     ("opentelemetry", "trace/", "asgi/__init__", "id_generator", "Span", "Tracer")),
    ("BentoML: access log", ("http/access.py", "logging/", "bentoml/_internal/log.py")),
    ("BentoML: request metrics (prometheus)", ("instruments.py", "prometheus_client")),
    ("BentoML: body parsing and serialization (pydantic)",
     ("pydantic", "io_models.py", "serde.py")),
    ("BentoML: API dispatch (signature, DI, context, timeout)",
     ("_bentoml_impl", "_bentoml_sdk", "bentoml/", "simple_di")),
    ("HTTP: uvicorn and starlette", ("uvicorn/", "starlette/", "httptools")),
]
GENERIC = [("event loop (asyncio)", ("asyncio/", "uvloop")),
           ("other: numpy, json, inspect, stdlib", ("",))]


def available() -> str | None:
    return shutil.which("py-spy")


def owner(stack: list[str]) -> str:
    for frame in reversed(stack):  # leaf first
        for name, marks in OWNERS:
            if any(m in frame for m in marks):
                return name
    leaf = stack[-1] if stack else ""
    return next(name for name, marks in GENERIC if any(m in leaf for m in marks))


def record(pid: int, seconds: float) -> subprocess.Popen:
    """Starts sampling `pid` for `seconds` (call `shares` on the result when it has ended)."""
    out = Path(tempfile.mkstemp(suffix=".txt", prefix="pyspy_")[1])
    proc = subprocess.Popen([available() or "py-spy", "record", "-p", str(pid), "-d",
                             str(max(1, round(seconds))), "-r", "200", "--gil", "-f", "raw",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.out = out  # type: ignore[attr-defined]
    return proc


def shares(proc: subprocess.Popen) -> dict[str, float]:
    """The recording's samples by owner, as shares of all samples (empty if py-spy failed)."""
    proc.wait(timeout=120)
    out: Path = proc.out  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    if out.exists():
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if n.isdigit():
                counts[owner(stack.split(";"))] += int(n)
        out.unlink()
    total = sum(counts.values())
    return {k: v / total for k, v in counts.most_common()} if total else {}
