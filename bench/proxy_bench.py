"""Proxy benchmark: the router sidecar beside direct calls, nginx and the LiteLLM proxy, in one run.

Every target sits in front of the same fast fake upstream (a raw uvloop HTTP server in its own process
that answers any POST with a fixed chat completion). For each target the load generator measures
latency at 1 connection and throughput at 16 connections, then the script prints p50/p99 added latency
(against direct calls) and req/s with ratios.

    .venv/bin/python bench/proxy_bench.py                # everything found on this machine
    .venv/bin/python bench/proxy_bench.py --seconds 3 --skip litellm

Targets: `direct`; `nginx` (Debian's nginx, skipped with a note when not installed); `litellm`
(`litellm[proxy]` from PyPI, installed on first use into ~/.cache/modelroute/bench-venv so it never
touches the project's venv; skipped with a note when that fails); `forwarder-1w` and `forwarder-2w`
(the minimal aiohttp + uvloop forwarder of DESIGN.md, bench/minimal_forwarder.py); `sidecar-1w` and
`sidecar-2w` (the sidecar with a realistic policy: 20 rules, residency with all four detectors, a
canary, metrics and a JSON-lines audit log on; 1 and 2 SO_REUSEPORT workers). The load generator is
`wrk` when installed, else a small keep-alive asyncio client (`--load python` forces it). Every phase
is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
BENCH_VENV = Path.home() / ".cache" / "modelroute" / "bench-venv"
PROMPT = "Summarize the benefits of unit testing in two sentences for a new engineer."

# --- the fast fake upstream ------------------------------------------------------------------------------

_ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Unit tests catch regressions early."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
    + str(len(_ANSWER)).encode()
    + b"\r\n\r\n"
    + _ANSWER
)


class _UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: just enough to be an upstream, and fast."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            assert self.transport is not None
            self.transport.write(_RESPONSE)


async def _serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_UpstreamProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- the python load generator -------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection sending the same request again and again."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def send(self) -> asyncio.Future[int]:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(self.request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        status = int(head[9:12])
        at = head.find(b"content-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at)
            total = end + 4 + int(head[at + 15 : stop if stop >= 0 else None])
        else:  # chunked: wait for the terminating chunk
            last = self.buffer.find(b"\r\n0\r\n\r\n", end)
            if last < 0:
                return
            total = last + 7
        if len(self.buffer) < total:
            return
        self.buffer = self.buffer[total:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))


async def _python_load(
    host: str, port: int, request: bytes, connections: int, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def run_connection() -> None:
        nonlocal errors
        _, client = await loop.create_connection(lambda: _Client(request), host, port)
        assert isinstance(client, _Client)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                status = await client.send()
            except ConnectionError:
                errors += 1
                _, client = await loop.create_connection(lambda: _Client(request), host, port)
                continue
            latencies.append(time.perf_counter() - started)
            errors += status != 200
        assert client.transport is not None
        client.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(run_connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return _summary(latencies, elapsed, errors)


def _summary(latencies: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    if not ordered:
        return {"requests": 0, "rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": errors}
    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "errors": errors,
    }


def _http_request(port: int, path: str, body: bytes, extra_headers: dict[str, str]) -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in extra_headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


# --- wrk ---------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(output: str, percentile: str) -> float:
    found = re.search(percentile + r"%\s+([\d.]+)(us|ms|s|m)\b", output)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def _wrk_load(
    url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    script = workdir / "post.lua"
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body.decode())}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(output, "50")
    p99 = _wrk_ms(output, "99")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(bad.group(1)) if bad else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return {"requests": requests, "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


# --- processes -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.05)
    return False


@dataclass
class Target:
    """One thing to benchmark: where it listens, what model name to send, how to stop it."""

    name: str
    port: int
    model: str
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    note: str = ""


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=REPO, start_new_session=True,
        )  # fmt: skip


def start_nginx(upstream: int, workdir: Path) -> Target | str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return "nginx not found (Debian: apt-get install -y nginx)"
    port = free_port()
    root = workdir / "nginx"
    (root / "logs").mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  upstream fake {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    )
    process = spawn([binary, "-p", str(root), "-c", str(conf), "-g", "daemon off;"], workdir / "nginx.log")
    if not wait_port(port, 10):
        stop(process)
        return f"nginx did not start (see {workdir / 'nginx.log'})"
    return Target("nginx", port, "fake-model", processes=[process])


def ensure_litellm(workdir: Path) -> Path | str:
    binary = BENCH_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"installing litellm[proxy] into {BENCH_VENV} (one time) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True, timeout=120)
        subprocess.run(
            [str(BENCH_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            check=True, timeout=900, stdout=subprocess.DEVNULL, stderr=open(workdir / "pip.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        return f"litellm[proxy] could not be installed: {exc}"
    return binary if binary.exists() else "litellm[proxy] installed no `litellm` command"


def start_litellm(upstream: int, workdir: Path, workers: int) -> Target | str:
    binary = ensure_litellm(workdir)
    if isinstance(binary, str):
        return binary
    port = free_port()
    config = workdir / f"litellm-{workers}.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench-model\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    master_key = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses to start without one
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        "LITELLM_MASTER_KEY": master_key,
    }
    command = [
        str(binary),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    process = spawn(command, workdir / f"litellm-{workers}.log", env)
    if not wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", 180, process):
        stop(process)
        return f"litellm proxy did not start (see {workdir / f'litellm-{workers}.log'})"
    headers = {"Authorization": f"Bearer {master_key}"}
    return Target(f"litellm-{workers}w", port, "bench-model", headers=headers, processes=[process])


def realistic_config(upstream: int) -> str:
    """A RouterConfig like a real namespace's: 20 rules, residency with detectors, a canary, 4 endpoints."""
    sys.path.insert(0, str(REPO / "sidecar"))
    from modelroute_contract import RouterConfig

    url = f"http://127.0.0.1:{upstream}/v1"

    def endpoint(name: str, tier: str) -> dict[str, Any]:
        def replica(name: str, region: str, label: str) -> dict[str, Any]:
            return {"name": name, "region": region, "url": url, "compliance": [label], "health": "Healthy"}

        return {
            "name": name,
            "model": "fake-model",
            "tier": tier,
            "pricing": {"inputPerMillion": 0.5, "outputPerMillion": 1.5},
            "capabilities": {"contextWindow": 128000, "jsonMode": True, "tools": True},
            "replicas": [
                replica("eu-1", "eu-west", "gdpr"),
                replica("eu-2", "eu-central", "gdpr"),
                replica("us-1", "us-east", "hipaa"),
            ],
        }

    rules: list[dict[str, Any]] = []
    for i in range(19):  # rules a typical request walks past before the default one
        kind = i % 4
        match: dict[str, Any] = {"models": ["auto"]}
        if kind == 0:
            match["metadata"] = {"tenant": [f"tenant-{i}"]}
        elif kind == 1:
            match["headers"] = [{"name": "x-team", "values": [f"team-{i}"]}]
        elif kind == 2:
            match["metadata"] = {"task": [f"task-{i}"]}
            match["complexity"] = {"min": 70}
        else:
            match["promptTokens"] = {"min": 50000 + i}
        rules.append(
            {"name": f"rule-{i:02d}", "match": match, "targets": [{"endpoint": "expert", "weight": 100}]}
        )
    rules.append(
        {
            "name": "default",
            "targets": [{"endpoint": "fast", "weight": 100}],
            "fallback": ["standard"],
            "escalation": ["expert"],
            "canary": {
                "name": "fast-v2",
                "stable": "fast",
                "candidate": "fast-v2",
                "candidateWeight": 10.0,
                "stickinessHeader": "x-user",
            },
        }
    )
    policy = {
        "name": "main",
        "virtualModels": ["auto"],
        "rules": rules,
        "residency": {
            "dataClasses": [
                {
                    "name": "eu-personal",
                    "allowedRegions": ["eu-central", "eu-west"],
                    "requiredCompliance": ["gdpr"],
                },
                {"name": "payment", "allowedRegions": ["eu-west"], "requiredCompliance": ["gdpr"]},
            ],
            "detectors": [
                {"kind": "email", "dataClass": "eu-personal"},
                {"kind": "phone", "dataClass": "eu-personal"},
                {"kind": "card", "dataClass": "payment"},
                {"kind": "iban", "dataClass": "payment"},
            ],
            "tenantDefaults": {"bank-a": "payment"},
        },
        "locality": {"preferLocal": True, "failoverOrder": ["eu-central", "us-east"]},
        "resilience": {"maxAttempts": 3, "perTryTimeoutSeconds": 10, "deadlineSeconds": 30},
        "budgets": {"maxCostPerRequestUsd": 1.0},
        "tenantLimits": [{"tenantTier": "", "requestsPerMinute": 10_000_000}],
    }
    endpoints = [
        endpoint("expert", "expert"),
        endpoint("fast", "fast"),
        endpoint("fast-v2", "fast"),
        endpoint("standard", "standard"),
    ]
    config = RouterConfig.model_validate(
        {"namespace": "bench", "endpoints": endpoints, "policies": [policy]}
    ).seal()
    return config.to_json()


def start_forwarder(upstream: int, workdir: Path, workers: int) -> Target | str:
    port = free_port()
    command = [
        sys.executable, str(REPO / "bench" / "minimal_forwarder.py"), "--port", str(port),
        "--upstream", f"http://127.0.0.1:{upstream}/v1", "--workers", str(workers),
    ]  # fmt: skip
    log = workdir / f"forwarder-{workers}w.log"
    process = spawn(command, log)
    if not wait_port(port, 30):
        stop(process)
        return f"minimal forwarder did not start (see {log})"
    return Target(f"forwarder-{workers}w", port, "auto", processes=[process])


def start_sidecar(upstream: int, workdir: Path, workers: int) -> Target | str:
    port = free_port()
    config = workdir / "routerConfig.json"
    config.write_text(realistic_config(upstream))
    command = [
        sys.executable, "-m", "modelroute_sidecar.main", "--port", str(port), "--admin-port", "0",
        "--config-file", str(config), "--region", "eu-west", "--workers", str(workers),
        "--audit-log", str(workdir / f"audit-{workers}w.jsonl"), "--log-level", "WARNING",
    ]  # fmt: skip
    process = spawn(command, workdir / f"sidecar-{workers}w.log")
    if not wait_until_up(f"http://127.0.0.1:{port}/readyz", 30, process):
        stop(process)
        return f"sidecar did not start (see {workdir / f'sidecar-{workers}w.log'})"
    return Target(f"sidecar-{workers}w", port, "auto", headers={"x-user": "user-1234"}, processes=[process])


# --- the run -------------------------------------------------------------------------------------------


Figures = dict[str, Any]
"""requests, rps, p50_ms, p99_ms, errors of one phase."""


def measure(target: Target, args: argparse.Namespace, workdir: Path) -> dict[int, Figures]:
    body = json.dumps(
        {"model": target.model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    ).encode()
    results: dict[int, Figures] = {}
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk"))
    for connections in (1, 16):
        # warm up: connection pools, caches, lazy imports
        _python_or_wrk(use_wrk, target, body, connections, min(1.0, args.seconds), workdir)
        results[connections] = _python_or_wrk(use_wrk, target, body, connections, args.seconds, workdir)
    return results


def _python_or_wrk(
    use_wrk: Any, target: Target, body: bytes, connections: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    if use_wrk:
        return _wrk_load(
            f"http://127.0.0.1:{target.port}{target.path}",
            body,
            target.headers,
            connections,
            seconds,
            workdir,
        )
    command = [
        sys.executable, __file__, "_load", "--port", str(target.port), "--path", target.path,
        "--connections", str(connections), "--seconds", str(seconds), "--body", body.decode(),
        "--headers", json.dumps(target.headers),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def report(rows: list[tuple[str, dict[int, Figures]]], notes: list[str], load: str) -> str:
    direct = dict(rows).get("direct")
    litellm = next((r for name, r in rows if name.startswith("litellm")), None)
    # the minimal forwarder with the same number of workers, keyed by "1w" / "2w"
    forwarders = {name.split("-", 1)[1]: r for name, r in rows if name.startswith("forwarder-")}
    lines = [
        f"load generator: {load}; 2-core box shared by generator, proxy and upstream",
        f"{'target':<12} {'p50@1':>8} {'p99@1':>8} {'+p50@1':>8} {'+p99@1':>8} {'req/s@16':>10} "
        f"{'p50@16':>8} {'p99@16':>8} {'vs direct':>9} {'vs litellm':>10} {'vs fwd':>6} {'errors':>6}",
    ]
    for name, result in rows:
        one, many = result[1], result[16]
        added50 = one["p50_ms"] - direct[1]["p50_ms"] if direct else float("nan")
        added99 = one["p99_ms"] - direct[1]["p99_ms"] if direct else float("nan")
        vs_direct = many["rps"] / direct[16]["rps"] if direct else float("nan")
        vs_litellm = many["rps"] / litellm[16]["rps"] if litellm and litellm[16]["rps"] else float("nan")
        forwarder = forwarders.get(name.rsplit("-", 1)[-1])
        vs_fwd = many["rps"] / forwarder[16]["rps"] if forwarder and forwarder[16]["rps"] else float("nan")
        lines.append(
            f"{name:<12} {one['p50_ms']:8.3f} {one['p99_ms']:8.3f} {added50:8.3f} {added99:8.3f} "
            f"{many['rps']:10.0f} {many['p50_ms']:8.3f} {many['p99_ms']:8.3f} {vs_direct:9.3f} "
            f"{vs_litellm:10.1f} {vs_fwd:6.2f} {one['errors'] + many['errors']:6d}"
        )
    lines.append(
        "latencies in ms; +p50/+p99: added over direct at 1 connection; "
        "vs fwd: req/s over the minimal aiohttp forwarder with as many workers"
    )
    lines += [f"skipped: {note}" for note in notes]
    return "\n".join(lines)


@contextlib.contextmanager
def running(target: Target | str, notes: list[str]) -> Iterator[Target | None]:
    if isinstance(target, str):
        notes.append(target)
        print(f"  skipped: {target}", flush=True)
        yield None
        return
    try:
        yield target
    finally:
        for process in target.processes:
            stop(process)


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="modelroute-bench-"))
    upstream_port = free_port()
    upstream = spawn(
        [sys.executable, __file__, "_upstream", "--port", str(upstream_port)], workdir / "upstream.log"
    )
    if not wait_port(upstream_port, 10):
        print("fake upstream did not start", file=sys.stderr)
        return 1
    rows: list[tuple[str, dict[int, Figures]]] = []
    notes: list[str] = []
    starters: dict[str, Callable[[], Target | str]] = {
        "direct": lambda: Target("direct", upstream_port, "fake-model"),
        "nginx": lambda: start_nginx(upstream_port, workdir),
        "litellm": lambda: start_litellm(upstream_port, workdir, 1),
        "forwarder-1w": lambda: start_forwarder(upstream_port, workdir, 1),
        "forwarder-2w": lambda: start_forwarder(upstream_port, workdir, 2),
        "sidecar-1w": lambda: start_sidecar(upstream_port, workdir, 1),
        "sidecar-2w": lambda: start_sidecar(upstream_port, workdir, 2),
    }
    load = (
        "wrk"
        if args.load == "wrk" or (args.load == "auto" and shutil.which("wrk"))
        else "python asyncio client"
    )
    try:
        for name, starter in starters.items():
            if name in args.skip or name.split("-")[0] in args.skip:
                notes.append(f"{name}: --skip")
                continue
            print(f"{name} ...", flush=True)
            with running(starter(), notes) as target:
                if target is not None:
                    try:
                        result = measure(target, args, workdir)
                    except (subprocess.SubprocessError, OSError, ValueError, AttributeError) as exc:
                        notes.append(f"{name}: measuring failed: {exc!r}")
                        continue
                    rows.append((target.name, result))
                    print(
                        f"  1 conn p50 {result[1]['p50_ms']:.3f} ms; 16 conns {result[16]['rps']:.0f} req/s",
                        flush=True,
                    )
    finally:
        stop(upstream)
    text = report(rows, notes, load)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": dict(rows), "notes": notes, "load": load}, indent=2))
    if notes and any("see " in note for note in notes):
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("_upstream")
    up.add_argument("--port", type=int, required=True)
    ld = sub.add_parser("_load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--path", required=True)
    ld.add_argument("--connections", type=int, required=True)
    ld.add_argument("--seconds", type=float, required=True)
    ld.add_argument("--body", required=True)
    ld.add_argument("--headers", default="{}")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase (default 5)")
    parser.add_argument("--skip", nargs="*", default=[], help="targets to skip: nginx litellm sidecar ...")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.command == "_upstream":
        asyncio.run(_serve_upstream(args.port))
        return 0
    if args.command == "_load":
        request = _http_request(args.port, args.path, args.body.encode(), json.loads(args.headers))
        result = asyncio.run(_python_load("127.0.0.1", args.port, request, args.connections, args.seconds))
        print(json.dumps(result))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
