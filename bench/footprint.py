"""Footprint of the sidecar beside nginx, in one run: memory, start-up, CPU per relayed stream chunk.

The sidecar runs beside every application pod, so what it costs when idle and per chunk it relays
matters as much as its top speed. This script starts the fake upstream of `harness.py`, nginx
(unbuffered, so it relays a stream chunk by chunk as the sidecar does) and the sidecar with the
realistic policy, with 1 and with 2 workers (admin port on, as in a pod), and prints:

- memory after traffic, from /proc/<pid>/smaps_rollup: RSS of the 1-worker sidecar; for the 2-worker
  one, the USS (pages no other process shares) and PSS of each worker, and the parent's;
- start to ready: from the spawn to the first 200 of `/readyz` on the data port (polled every 5 ms);
- CPU per relayed chunk: utime+stime (/proc/<pid>/stat) of every process of the target (parent and
  workers, nginx's master and workers) over `--streams` streamed answers of `--chunks` events each,
  `--connections` at a time, against nginx relaying the same streams;
- req/s at 16 connections of the 2-worker sidecar against the minimal aiohttp forwarder with 2
  workers, and the p50 it adds at 1 connection over calling the upstream directly (harness.measure,
  the proxy bench's phases).

    .venv/bin/python bench/footprint.py                 # ~2 minutes
    .venv/bin/python bench/footprint.py --seconds 3 --streams 400

The figures are checked against the targets of issue 11 and each is printed as met or not. On a
shared 2-core box the CPU and latency figures move between runs: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

try:
    from bench.harness import (
        Figures,
        Memory,
        Target,
        chat_body,
        cpu_seconds,
        family,
        measure,
        memory,
        start_forwarder,
        start_nginx,
        start_sidecar,
        start_upstream,
        stop,
        use_wrk,
    )
except ModuleNotFoundError:  # run as `python bench/footprint.py`: bench/ itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        Figures,
        Memory,
        Target,
        chat_body,
        cpu_seconds,
        family,
        measure,
        memory,
        start_forwarder,
        start_nginx,
        start_sidecar,
        start_upstream,
        stop,
        use_wrk,
    )


TARGETS = {
    "rss_1w_mib": ("one worker RSS", "<=", 40.0, "MiB"),
    "uss_extra_mib": ("each extra worker USS", "<=", 15.0, "MiB"),
    "ready_s": ("start to ready (worst of 1w, 2w)", "<=", 0.5, "s"),
    "cpu_vs_nginx": ("CPU per chunk vs nginx", "<=", 1.5, "x"),
    "rps_vs_forwarder": ("req/s @16, 2w, vs forwarder-2w", ">=", 1.3, "x"),
    "added_p50_ms": ("added p50 @1 conn, 2w", "<=", 0.25, "ms"),
}
"""Issue 11's targets: key -> (what, comparison, bound, unit)."""


# --- streams --------------------------------------------------------------------------------------------


class _StreamClient(asyncio.Protocol):
    """One keep-alive connection asking for streamed answers; counts the events of each."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def ask(self) -> asyncio.Future[bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(self.request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n0\r\n\r\n")
        if end >= 0 and self.waiter is not None and not self.waiter.done():
            answer = bytes(self.buffer[: end + 7])
            del self.buffer[: end + 7]
            self.waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))


async def _streams(port: int, target: Target, streams: int, connections: int) -> tuple[int, int]:
    """Ask for `streams` streamed answers over `connections` connections; (events relayed, bad streams)."""
    body = chat_body(target.model, stream=True)
    headers = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
    request = (
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    left = streams
    events = bad = 0

    async def run_connection() -> None:
        nonlocal left, events, bad
        _, client = await loop.create_connection(lambda: _StreamClient(request), "127.0.0.1", port)
        assert isinstance(client, _StreamClient)
        while left > 0:
            left -= 1
            answer = await client.ask()
            events += answer.count(b"data: ")
            bad += not answer.startswith(b"HTTP/1.1 200") or b"data: [DONE]" not in answer
        assert client.transport is not None
        client.transport.close()

    await asyncio.gather(*(run_connection() for _ in range(connections)))
    return events, bad


def relay_cost(target: Target, args: argparse.Namespace) -> dict[str, float]:
    """CPU seconds per relayed event of every process of `target`, over the configured streams."""
    pids = family(target.processes[0].pid)
    asyncio.run(_streams(target.port, target, max(4, args.streams // 10), args.connections))  # warm up
    before = cpu_seconds(pids)
    started = time.perf_counter()
    events, bad = asyncio.run(_streams(target.port, target, args.streams, args.connections))
    elapsed = time.perf_counter() - started
    used = cpu_seconds(pids) - before
    return {
        "events": events,
        "bad_streams": bad,
        "cpu_us_per_event": used / max(1, events) * 1e6,
        "events_per_s": events / elapsed,
    }


# --- the run --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def started(target: Target | str) -> Iterator[Target]:
    if isinstance(target, str):
        raise RuntimeError(target)
    try:
        yield target
    finally:
        for process in target.processes:
            stop(process)


def sidecar_memory(target: Target) -> dict[str, Any]:
    """Memory of a sidecar's processes: the parent (or the only process), then each worker."""
    parent = target.processes[0].pid
    pids = family(parent)
    return {
        "parent": memory(parent),
        "workers": [memory(pid) for pid in pids[1:]],
        "total_pss": sum(memory(pid).pss for pid in pids),
    }


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="modelroute-footprint-"))
    upstream_port, upstream = start_upstream(
        workdir, stream_chunks=args.chunks, stream_interval=args.chunk_interval
    )
    results: dict[str, Any] = {}
    try:
        print("nginx ...", flush=True)
        with started(start_nginx(upstream_port, workdir, workers=2)) as nginx:
            results["nginx_relay"] = relay_cost(nginx, args)
            results["nginx_memory"] = [memory(pid) for pid in family(nginx.processes[0].pid)]
        for workers in (1, 2):
            print(f"sidecar, {workers} worker(s) ...", flush=True)
            with started(start_sidecar(upstream_port, workdir, workers, admin=True)) as sidecar:
                results[f"ready_{workers}w"] = sidecar.ready_seconds
                results[f"relay_{workers}w"] = relay_cost(sidecar, args)
                if workers == 2:
                    results["phases_2w"] = measure(sidecar, args.seconds, args.load, workdir)
                results[f"memory_{workers}w"] = sidecar_memory(sidecar)
        print("minimal forwarder, 2 workers; direct ...", flush=True)
        with started(start_forwarder(upstream_port, workdir, 2)) as forwarder:
            results["phases_forwarder"] = measure(forwarder, args.seconds, args.load, workdir)
        direct = Target("direct", upstream_port, "fake-model")
        results["phases_direct"] = measure(direct, args.seconds, args.load, workdir, connections=(1,))
    except RuntimeError as exc:
        print(f"{exc}; logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        stop(upstream)
    print()
    print(report(results, args))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def figures(results: dict[str, Any]) -> dict[str, float]:
    """The values the targets are judged on."""
    one: Memory = results["memory_1w"]["parent"]
    workers: list[Memory] = results["memory_2w"]["workers"]
    sidecar: Figures = results["phases_2w"]
    forwarder: Figures = results["phases_forwarder"]
    direct: Figures = results["phases_direct"]
    return {
        "rss_1w_mib": one.rss,
        "uss_extra_mib": max(w.uss for w in workers),
        "ready_s": max(results["ready_1w"], results["ready_2w"]),
        "cpu_vs_nginx": results["relay_2w"]["cpu_us_per_event"] / results["nginx_relay"]["cpu_us_per_event"],
        "rps_vs_forwarder": sidecar[16]["rps"] / forwarder[16]["rps"],
        "added_p50_ms": sidecar[1]["p50_ms"] - direct[1]["p50_ms"],
    }


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"load generator: {'wrk' if use_wrk(args.load) else 'python'}; 2-core box, shared", ""]
    lines.append("memory after traffic (MiB)        RSS      PSS      USS")
    nginx = results["nginx_memory"]
    lines.append(
        f"nginx, {len(nginx)} processes (sum)      {sum(m.rss for m in nginx):7.1f}  "
        f"{sum(m.pss for m in nginx):7.1f}  {sum(m.uss for m in nginx):7.1f}"
    )
    for workers in (1, 2):
        mem = results[f"memory_{workers}w"]
        label = "sidecar 1 worker" if workers == 1 else "sidecar 2 workers: parent"
        parent = mem["parent"]
        lines.append(f"{label:<32} {parent.rss:7.1f}  {parent.pss:7.1f}  {parent.uss:7.1f}")
        for index, worker in enumerate(mem["workers"]):
            lines.append(
                f"{'  worker ' + str(index):<32} {worker.rss:7.1f}  {worker.pss:7.1f}  {worker.uss:7.1f}"
            )
        if workers == 2:
            lines.append(f"{'  all processes, PSS':<32} {'':7}  {mem['total_pss']:7.1f}")
    lines.append("")
    lines.append(
        f"start to ready: 1 worker {results['ready_1w']:.3f} s, 2 workers {results['ready_2w']:.3f} s"
    )
    lines.append("")
    lines.append(
        f"relayed streams: {args.streams} x {args.chunks} events, {args.connections} at a time "
        f"({args.chunk_interval * 1000:g} ms apart)"
    )
    lines.append("target        CPU us/event   events/s   bad streams")
    for name, key in (("nginx", "nginx_relay"), ("sidecar 1w", "relay_1w"), ("sidecar 2w", "relay_2w")):
        relay = results[key]
        lines.append(
            f"{name:<13} {relay['cpu_us_per_event']:12.1f} {relay['events_per_s']:10.0f} "
            f"{relay['bad_streams']:13d}"
        )
    sidecar, forwarder, direct = results["phases_2w"], results["phases_forwarder"], results["phases_direct"]
    lines.append("")
    lines.append(
        f"req/s @16: sidecar 2w {sidecar[16]['rps']:.0f}, forwarder 2w {forwarder[16]['rps']:.0f}; "
        f"p50 @1: direct {direct[1]['p50_ms']:.3f} ms, sidecar 2w {sidecar[1]['p50_ms']:.3f} ms, "
        f"forwarder 2w {forwarder[1]['p50_ms']:.3f} ms"
    )
    lines.append("")
    lines.append("issue 11 targets")
    for key, value in figures(results).items():
        what, comparison, bound, unit = TARGETS[key]
        met = value <= bound if comparison == "<=" else value >= bound
        lines.append(
            f"  {what:<36} {value:8.3f} {unit:<3} (target {comparison} {bound:g})  "
            + ("met" if met else "NOT met")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200, help="streamed answers per target (default 200)")
    parser.add_argument("--chunks", type=int, default=100, help="events per streamed answer (default 100)")
    parser.add_argument("--chunk-interval", type=float, default=0.001, help="seconds between events")
    parser.add_argument("--connections", type=int, default=8, help="streams at a time (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each req/s and latency phase (default 5)")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
