"""A fixed-rate, open-loop HTTP/1.1 load generator: latency without coordinated omission.

Request k is due at t0 + k / rate whether or not earlier ones have been answered (wrk's closed
loop waits for an answer before sending again, so a stall delays the requests that would have
measured it). Each latency is measured from when the request was *due*, not from when it was
sent: a request that had to wait for a free connection, or for this process, counts that wait.
Keep-alive connections are opened as needed, up to `--connections`.

Reported: latency from due time, service time (sent to answered), how late requests were sent
(this generator's own timer and CPU share; the floor of what it can measure) and non-2xx count.

    python -m benchmarks.openloop --port 3000 --path /forecast --bodies bodies.jsonl --rate 500

`--closed N` runs a closed loop instead (N connections, each sending again as soon as it is
answered; latency from send): the stand-in for wrk's throughput runs where wrk is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

now = time.perf_counter  # the loop's clock may be coarse (uvloop's is in whole milliseconds)


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.sent_at = self.done_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.buf.clear()
        self.sent_at = now()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        status = _complete(self.buf)
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.done_at = now()  # here, not when the awaiting task next runs
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))


def _complete(buf: bytearray) -> int | None:
    """The status of the response in `buf` once it is complete (Content-Length or chunked)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    for line in head.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            return status if len(buf) >= end + 4 + int(line[15:]) else None
    if b"transfer-encoding: chunked" in head:
        return status if buf.endswith(b"0\r\n\r\n") else None
    return status


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _percentiles(values: list[float]) -> dict[str, float]:
    """Milliseconds; nearest-rank percentiles."""
    if not values:
        return {}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999),
            "max": ordered[-1] * 1e3, "mean": sum(ordered) / len(ordered) * 1e3}


async def run(host: str, port: int, path: str, bodies: list[bytes], rate: float,
              duration: float, warmup: float, connections: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    requests = [_request(host, port, path, b) for b in bodies]
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    opened = 0
    records: list[tuple[float, float, float, int]] = []  # due, sent, done, status (0 = error)

    async def one(due: float, request: bytes) -> None:
        nonlocal opened
        try:
            if idle.empty() and opened < connections:
                opened += 1
                _, conn = await loop.create_connection(_Conn, host, port)
            else:
                conn = await idle.get()
            status = await conn.send(request)
        except (ConnectionError, OSError):  # counted as an error; its connection is gone
            records.append((due, now(), now(), 0))
            opened -= 1
            return
        records.append((due, conn.sent_at, conn.done_at, status))
        idle.put_nowait(conn)

    total = int((warmup + duration) * rate)
    tasks = set()
    t0 = now() + 0.05
    for k in range(total):
        due = t0 + k / rate
        # always yield, even when behind: the answers must be read while requests go out
        await asyncio.sleep(max(0.0, due - now()))
        task = loop.create_task(one(due, requests[k % len(requests)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    measured = [r for r in records if r[0] >= t0 + warmup]
    ok = [r for r in measured if 200 <= r[3] < 300]
    last = max((r[2] for r in measured), default=t0 + warmup)
    return {"rate": rate, "duration_s": duration, "warmup_s": warmup, "requests": len(measured),
            "unanswered": total - len(records), "non_2xx": len(measured) - len(ok),
            "errors": sum(r[3] == 0 for r in measured), "connections": opened,
            "achieved_rps": len(measured) / max(last - (t0 + warmup), 1e-9),
            "latency_ms": _percentiles([d - due for due, _, d, _ in measured]),
            "service_ms": _percentiles([d - s for _, s, d, _ in measured]),
            "send_late_ms": _percentiles([s - due for due, s, _, _ in measured]),
            "generator_cpu_s": _cpu()}


async def run_closed(host: str, port: int, path: str, bodies: list[bytes], connections: int,
                     duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    requests = [_request(host, port, path, b) for b in bodies]
    records: list[tuple[float, float, int]] = []  # sent, done, status (0 = error)
    start = now()
    deadline = start + duration

    async def client(offset: int) -> None:
        _, conn = await loop.create_connection(_Conn, host, port)
        k = offset
        while now() < deadline:
            try:
                status = await conn.send(requests[k % len(requests)])
            except (ConnectionError, OSError):
                records.append((conn.sent_at, now(), 0))
                _, conn = await loop.create_connection(_Conn, host, port)
                continue
            records.append((conn.sent_at, conn.done_at, status))
            k += 1

    await asyncio.gather(*(client(i * 997) for i in range(connections)))
    elapsed = now() - start
    return {"connections": connections, "duration_s": elapsed, "requests": len(records),
            "rps": len(records) / elapsed, "non_2xx": sum(not 200 <= r[2] < 300 for r in records),
            "errors": sum(r[2] == 0 for r in records),
            "latency_ms": _percentiles([d - s for s, d, _ in records]),
            "generator_cpu_s": _cpu()}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/forecast")
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body a line")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds sent, not measured")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--closed", type=int, default=0, metavar="N",
                        help="closed loop over N connections instead of a fixed rate")
    args = parser.parse_args(argv)
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line]
    started = time.perf_counter()
    job = (run_closed(args.host, args.port, args.path, bodies, args.closed, args.duration)
           if args.closed else
           run(args.host, args.port, args.path, bodies, args.rate, args.duration, args.warmup,
               args.connections))
    try:
        import uvloop  # less of the generator's own CPU in the numbers
    except ImportError:
        result = asyncio.run(job)
    else:
        result = uvloop.run(job)
    result["generator_cpu_share"] = result.pop("generator_cpu_s") / (time.perf_counter()
                                                                     - started)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
