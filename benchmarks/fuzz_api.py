"""Property-based fuzzing of the forecaster's HTTP API from the OpenAPI spec it serves.

Schemathesis reads /docs.json and runs, for every operation, its phases: the spec's examples
(plus real requests added here, so that 200 bodies are checked too), coverage (each schema
keyword's boundaries and violations, deterministic), fuzzing (Hypothesis: valid and invalid data)
and stateful sequences. Every response goes through all of schemathesis' checks: never a 5xx
(`not_a_server_error`), documented status codes, content types and bodies
(`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`), invalid
data refused with a 4xx (`negative_data_rejection`), valid data accepted
(`positive_data_acceptance`), auth enforced when configured (`ignored_auth`), 405 for other
methods, ... plus two of ours: no Python traceback in a body, and no 422 with field errors for a
request that the spec says is valid.

Real keys: a fuzzed store id is almost never a real one (404). With `keys` (the forecast feature
snapshot's store, item and date triples), about half the generated bodies get a real triple, but
only where the generated values were valid: an invalid body stays invalid. Those reach the model
and, with random price and on_promo overrides, the what-if path.

    python -m benchmarks.fuzz_api --url http://127.0.0.1:3001              # `make serve`
    python -m benchmarks.fuzz_api --url http://host:3000 --examples 500 --seed 7 --token T

Options: `--examples` (per operation and phase, default 100), `--seed` (default 0: the same run
every time), `--token` (default $RETAIL_ML_API_TOKEN), `--keys` (a Delta table or Parquet file
with store_id, item_id, date; default $RETAIL_ML_HOME/delta/gold/forecast_features when it
exists), `--phases`, `--max-failures`. Prints the requests by operation and status, then each
distinct failure with a curl to reproduce it; exits 1 on any failure or error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, StopReason, events, from_schema

from bentos.demand_forecaster.middleware import UNSERVABLE

SPEC_PATH = "/docs.json"
PHASES = ("examples", "coverage", "fuzzing", "stateful")
FEATURES_TABLE = "gold/forecast_features"
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
Key = tuple[str, str, str]  # store_id, item_id, ISO date


@schemathesis.check
def no_traceback(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                 case: schemathesis.Case) -> None:
    """No body shows a Python traceback (an error's message only, never the server's code)."""
    if b"Traceback (most recent call last)" in (response.content or b""):
        raise AssertionError("the response body contains a Python traceback")


@schemathesis.check
def valid_data_passes_validation(ctx: schemathesis.CheckContext,
                                 response: schemathesis.Response,
                                 case: schemathesis.Case) -> None:
    """A request the spec says is valid is never refused with field errors: a 422 whose `detail`
    has a validation type means the server validates more strictly than it documents. (Type
    `unservable` is a documented refusal of valid data: a date outside the horizon, an override
    without online state.)"""
    meta = case.meta
    if response.status_code != 422 or meta is None:
        return
    if meta.generation.mode.is_negative or any(
            c.mode.is_negative for c in meta.components.values()):
        return
    try:
        body = response.json()
    except ValueError:
        return
    invalid = [e for e in body.get("detail") or [] if e.get("type") != UNSERVABLE] \
        if isinstance(body, dict) else []
    if invalid:
        raise AssertionError(f"a schema-valid request was refused as invalid: "
                             f"{body.get('error', invalid)}")


@dataclass
class Report:
    """A run: requests by operation and status, and each distinct failure."""

    seconds: float = 0.0
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    checks: Counter[str] = field(default_factory=Counter)  # responses each check passed
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)  # -> curl
    errors: list[str] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    @property
    def by_status(self) -> Counter[int]:
        return sum(self.statuses.values(), Counter())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.by_status.items() if status >= 500)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors and self.server_errors == 0

    def summary(self) -> str:
        lines = [f"{self.requests} requests in {self.seconds:.1f} s, by status: "
                 + _counts(self.by_status)]
        lines += [f"  {label}: {_counts(c)}" for label, c in sorted(self.statuses.items())]
        lines.append("checks passed: " + ", ".join(
            f"{name} {n}" for name, n in sorted(self.checks.items())))
        for (label, check, title), curl in self.failures.items():
            lines += [f"FAILURE {label} [{check}] {title}", f"  {curl}"]
        lines += [f"ERROR {e}" for e in self.errors]
        lines.append("OK: no server error, every response as documented" if self.ok else
                     f"FAILED: {len(self.failures)} failure(s), {len(self.errors)} error(s), "
                     f"{self.server_errors} server error(s)")
        return "\n".join(lines)


def _counts(counter: Counter[int]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in sorted(counter.items())) or "none"


def config(url: str, *, examples: int, seed: int, token: str | None,
           phases: Iterable[str] = PHASES, max_failures: int | None = None,
           from_responses: bool = True) -> schemathesis.Config:
    """Every check on, valid and invalid data, reproducible: a fixed seed and no example
    database (a stored failure would be replayed first, and change the run). With
    `from_responses` off, no value seen in a response feeds later requests: the same requests
    against any build (model tags and timestamps differ), not only against the same server."""
    data: dict[str, Any] = {
        "seed": seed,
        "base-url": url.rstrip("/"),
        "workers": 1,
        "request-timeout": 60,
        "generation": {"mode": "all", "max-examples": examples, "database": "none"},
        "phases": {p: {"enabled": p in set(phases), **(
            {} if from_responses or p == "stateful" else
            {"extra-data-sources": {"responses": False}})} for p in PHASES},
        "checks": {
            # 422 is also a documented answer to valid data (a date outside the horizon, an
            # override without online state); refusals of valid data as *invalid* are caught by
            # `valid_data_passes_validation`. 413: a batch over the server's limit.
            "positive_data_acceptance": {"expected-statuses": ["2XX", 401, 404, 413, 422]},
        },
    }
    if token:
        data["auth"] = {"openapi": {"bearer": {"bearer": token}}}
    if max_failures:
        data["max-failures"] = max_failures
    return schemathesis.Config.from_dict(data)


def load_schema(url: str, cfg: schemathesis.Config, *, token: str | None,
                keys: Sequence[Key] = ()) -> Any:
    """The served spec, with real requests as examples and the real-key hook when `keys`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.get(f"{url.rstrip('/')}{SPEC_PATH}", headers=headers, timeout=30)
    resp.raise_for_status()
    spec = resp.json()
    if keys:
        _add_examples(spec, keys)
    schema = schemathesis.openapi.from_dict(spec, config=cfg)
    if keys:
        schema.hook("flatmap_body")(_real_keys_hook(keys))
    return schema


def _add_examples(spec: dict[str, Any], keys: Sequence[Key]) -> None:
    """Real requests as the bodies' examples: plain, each override, and a batch of all three."""
    plain = [{"store_id": s, "item_id": i, "date": d} for s, i, d in keys[:3]]
    bodies = [plain[0], {**plain[1 % len(plain)], "price": 2.5},
              {**plain[2 % len(plain)], "on_promo": 1}]
    examples = {"/forecast": bodies, "/forecast_batch": [{"requests": bodies}]}
    for path, values in examples.items():
        media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        media["examples"] = {f"real_{n}": {"value": v} for n, v in enumerate(values)}


def _real_keys_hook(keys: Sequence[Key]) -> Any:
    def ground(body: Any, key: Key) -> Any:
        if not isinstance(body, dict):
            return body
        if isinstance(body.get("requests"), list):
            return {**body, "requests": [ground(r, key) for r in body["requests"]]}
        out = dict(body)
        for name, value in zip(("store_id", "item_id", "date"), key, strict=True):
            if _valid(name, body.get(name)):  # never turn an invalid value into a valid one
                out[name] = value
        return out

    def flatmap_body(ctx: schemathesis.HookContext, body: Any) -> st.SearchStrategy:
        if ctx.operation is None or ctx.operation.path not in ("/forecast", "/forecast_batch"):
            return st.just(body)
        return st.one_of(st.just(body), st.sampled_from(keys).map(lambda k: ground(body, k)))

    return flatmap_body


def _valid(name: str, value: Any) -> bool:
    """Whether a generated value is valid for the field (a non-empty id; a YYYY-MM-DD date)."""
    if not isinstance(value, str) or not value:
        return False
    if name != "date":
        return True
    if not ISO_DATE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:  # 2025-02-30
        return False
    return True


def run(schema: Any) -> Report:
    """Runs the engine over `schema` and collects every response's status and every failure."""
    report, start = Report(), time.perf_counter()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _collect(report, event.recorder)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            report.stop_reason = str(event.stop_reason)
            if event.stop_reason not in (StopReason.COMPLETED, StopReason.FAILURE_LIMIT):
                report.errors.append(f"stopped early: {event.stop_reason}")
            for failure in event.failures:
                report.failures[("run", "after_run", failure.title)] = failure.message
    report.seconds = time.perf_counter() - start
    return report


def _collect(report: Report, recorder: Any) -> None:
    for case_id, interaction in recorder.interactions.items():
        if interaction.response is None:
            continue
        node = recorder.cases.get(case_id)
        label = node.value.operation.label if node is not None else recorder.label
        report.statuses.setdefault(label, Counter())[interaction.response.status_code] += 1
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status == Status.SUCCESS:
                report.checks[check.name] += 1
            elif check.status == Status.ERROR:
                report.errors.append(f"{recorder.label}: check {check.name} crashed on case "
                                     f"{case_id}")
            elif check.failure_info is not None:
                failure = check.failure_info.failure
                key = (failure.operation or recorder.label, check.name, failure.title)
                report.failures.setdefault(key, check.failure_info.code_sample)


def fuzz(url: str, *, examples: int = 100, seed: int = 0, token: str | None = None,
         keys: Sequence[Key] = (), phases: Iterable[str] = PHASES,
         max_failures: int | None = None, from_responses: bool = True) -> Report:
    cfg = config(url, examples=examples, seed=seed, token=token, phases=phases,
                 max_failures=max_failures, from_responses=from_responses)
    return run(load_schema(url, cfg, token=token, keys=keys))


def read_keys(path: Path) -> list[Key]:
    """(store_id, item_id, ISO date) of every row of a Delta table or a Parquet file."""
    import polars as pl

    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_delta(str(path))
    return sorted((s, i, d.isoformat()) for s, i, d in
                  frame.select("store_id", "item_id", "date").unique().iter_rows())


def _default_keys() -> Path | None:
    home = os.environ.get("RETAIL_ML_HOME")
    table = Path(home) / "delta" / FEATURES_TABLE if home else None
    return table if table is not None and (table / "_delta_log").is_dir() else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:3001", help="the server's base URL")
    parser.add_argument("--examples", type=int, default=100,
                        help="generated examples per operation and phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=os.environ.get("RETAIL_ML_API_TOKEN") or None)
    parser.add_argument("--keys", type=Path, default=_default_keys(),
                        help="Delta table or Parquet file of real store_id, item_id, date")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--max-failures", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    keys = read_keys(args.keys) if args.keys else []
    print(f"fuzzing {args.url}{SPEC_PATH}: {args.examples} examples per operation and phase, "
          f"seed {args.seed}, {len(keys)} real keys"
          + (f" from {args.keys}" if args.keys else " (valid bodies will mostly get 404)"),
          flush=True)
    report = fuzz(args.url, examples=args.examples, seed=args.seed, token=args.token, keys=keys,
                  phases=[p.strip() for p in args.phases.split(",") if p.strip()],
                  max_failures=args.max_failures)
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps({
            "url": args.url, "examples": args.examples, "seed": args.seed,
            "seconds": report.seconds, "requests": report.requests,
            "statuses": {k: dict(v) for k, v in report.statuses.items()},
            "failures": [{"operation": o, "check": c, "title": t, "curl": curl}
                         for (o, c, t), curl in report.failures.items()],
            "errors": report.errors, "ok": report.ok}, indent=1))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
