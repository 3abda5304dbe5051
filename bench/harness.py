"""Parts the benchmarks share: the fast fake upstream, the load generators, the targets they measure.

`proxy_bench.py` (throughput and added latency beside nginx, LiteLLM and the minimal forwarder),
`footprint.py` (memory, start-up and CPU per relayed chunk) and `instructions_bench.py` (callgrind)
start the same processes from here, so a figure in one means the same set-up as in the others.

- the fake upstream: a raw uvloop HTTP/1.1 server in its own process (`python bench/harness.py
  _upstream --port N`) answering any POST with a fixed chat completion, or, for a body with
  `"stream": true`, with an SSE stream of `--stream-chunks` events `--stream-interval` seconds apart,
  each in its own HTTP chunk (so a relay sees one read per event);
- load: `wrk` when installed, else a small keep-alive asyncio client (`_load`); `measure` runs the
  standard phases (p50/p99 at 1 connection, req/s at 16);
- targets: nginx, the minimal aiohttp forwarder, the sidecar with the realistic policy, each a
  `Target`; a `Variant` runs the sidecar with another interpreter or source tree (A/B in one run).
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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]

if str(REPO) not in sys.path:  # run as `python bench/<script>.py`: only bench/ itself is on sys.path
    sys.path.insert(0, str(REPO))
from tests.ports import free_port  # noqa: E402  (one definition of how harnesses pick ports)

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


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(event: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(event), event)


def _event(delta: dict[str, str], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


STREAM_EVENT = _chunk(_event({"content": "token "}, None))
"""One relayed chunk of a streamed answer: an SSE event of about 150 bytes in its own HTTP chunk."""
_STREAM_END = _chunk(_event({}, "stop")) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class _UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: just enough to be an upstream, and fast.
    A body asking for `"stream": true` gets `chunks` events, `interval` seconds apart, then the end."""

    def __init__(self, chunks: int, interval: float) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.chunks = chunks
        self.interval = interval
        self.streaming: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.streaming is None:  # one answer at a time: a stream holds the connection
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
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            assert self.transport is not None
            if b'"stream": true' in body or b'"stream":true' in body:
                self.transport.write(_STREAM_HEAD)
                self._stream(self.chunks)
            else:
                self.transport.write(_RESPONSE)

    def _stream(self, left: int) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            self.streaming = None
            return
        if left == 0:
            self.streaming = None
            self.transport.write(_STREAM_END)
            self.data_received(b"")  # a request that arrived meanwhile
            return
        self.transport.write(STREAM_EVENT)
        loop = asyncio.get_running_loop()
        self.streaming = loop.call_later(self.interval, self._stream, left - 1)


async def _serve_upstream(port: int, chunks: int, interval: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _UpstreamProtocol(chunks, interval), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def start_upstream(
    workdir: Path, *, stream_chunks: int = 20, stream_interval: float = 0.001
) -> tuple[int, subprocess.Popen[bytes]]:
    """The fake upstream in its own process: its port and process (raises when it does not start)."""
    port = free_port()
    command = [
        sys.executable, __file__, "_upstream", "--port", str(port),
        "--stream-chunks", str(stream_chunks), "--stream-interval", str(stream_interval),
    ]  # fmt: skip
    process = spawn(command, workdir / "upstream.log")
    if not wait_port(port, 10):
        stop(process)
        raise RuntimeError(f"fake upstream did not start (see {workdir / 'upstream.log'})")
    return port, process


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


def wait_until_up(
    url: str, timeout: float, process: subprocess.Popen[bytes] | None = None, interval: float = 0.1
) -> bool:
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
        time.sleep(interval)
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
    ready_seconds: float = float("nan")
    """From the spawn to the first answer of its readiness check (polled every 5 ms where measured)."""


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


def start_nginx(upstream: int, workdir: Path, *, workers: int = 2) -> Target | str:
    """Debian's nginx as a reverse proxy with upstream keep-alive; unbuffered, so that a stream is
    relayed chunk by chunk as the sidecar relays it."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return "nginx not found (Debian: apt-get install -y nginx)"
    port = free_port()
    root = workdir / "nginx"
    (root / "logs").mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {workers};
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
      proxy_buffering off;
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


def realistic_config(upstream: int, learned: bool = False, shadow: float = 0.0) -> str:
    """A RouterConfig like a real namespace's: 20 rules, residency with detectors, a canary, 4 endpoints.
    `learned`: a semantic rule first and the complexity rules on the builtin difficulty model, so every
    request pays for one embedding (the `+learned` targets of the proxy bench). `shadow`: the default rule
    mirrors this percentage of its requests to a fifth endpoint on the same fake upstream (the `+shadow`
    targets: what a copy costs the sidecar)."""
    sys.path.insert(0, str(REPO / "contract"))
    from modelroute_contract import BUILTIN_DIFFICULTY_SHA256, BUILTIN_DIFFICULTY_VERSION, RouterConfig

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
    if shadow:
        rules[-1]["shadow"] = {"endpoint": "shadow", "percent": shadow, "maxConcurrent": 64}
    if learned:
        for rule in rules:
            if "complexity" in rule.get("match", {}):
                rule["match"]["complexityScorer"] = "builtin"
        rules.insert(
            0,
            {
                "name": "code",
                "match": {"semantic": {"route": "code", "minSimilarity": 0.9}},
                "targets": [{"endpoint": "expert", "weight": 100}],
            },
        )
        policy["difficultyModels"] = [
            {"name": "builtin", "version": BUILTIN_DIFFICULTY_VERSION, "sha256": BUILTIN_DIFFICULTY_SHA256}
        ]
        policy["semanticRoutes"] = [
            {"name": "code", "examples": ["Write a Python function that parses CSV", "Fix this C segfault"]},
            {"name": "chat", "examples": ["Hi, how are you?", "Tell me a joke"]},
        ]
    endpoints = [
        endpoint("expert", "expert"),
        endpoint("fast", "fast"),
        endpoint("fast-v2", "fast"),
        endpoint("standard", "standard"),
        *([endpoint("shadow", "fast")] if shadow else []),
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


@dataclass(frozen=True)
class Variant:
    """Another build of the sidecar to run beside this one (A/B in one run): an interpreter, and
    optionally another source tree whose `sidecar/` directory goes first on PYTHONPATH."""

    name: str
    python: str
    source: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Variant:
        """`NAME=PYTHON` or `NAME=PYTHON:SOURCE_TREE`."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise argparse.ArgumentTypeError(f"expected NAME=PYTHON[:SOURCE_TREE], got {text!r}")
        python, _, source = rest.partition(":")
        return cls(name, python, Path(source).resolve() if source else None)

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.source / "sidecar")} if self.source is not None else {}


THIS = Variant("", sys.executable)
"""The interpreter and tree running this script."""


ADMIN_TOKEN = "bench-admin-token"
"""The admin token of sidecars started with `admin=True`."""


def start_sidecar(
    upstream: int,
    workdir: Path,
    workers: int,
    variant: Variant = THIS,
    *,
    admin: bool = False,
    learned: bool = False,
    shadow: float = 0.0,
) -> Target | str:
    """The sidecar with the realistic config; `admin` also serves the admin port, as in a pod (the
    proxy bench leaves it off). `ready_seconds` is measured from the spawn to the first 200 of
    `/readyz` on the data port."""
    port = free_port()
    suffix = ("+learned" if learned else "") + ("+shadow" if shadow else "")
    suffix += f"@{variant.name}" if variant.name else ""
    name = f"sidecar-{workers}w{suffix}"
    config = workdir / f"routerConfig-{name}.json"
    config.write_text(realistic_config(upstream, learned, shadow))
    admin_port = free_port() if admin else 0
    command = [
        variant.python, "-m", "modelroute_sidecar.main", "--port", str(port), "--admin-port", str(admin_port),
        "--admin-host", "127.0.0.1", "--config-file", str(config), "--region", "eu-west",
        "--workers", str(workers), "--audit-log", str(workdir / f"audit-{name}.jsonl"),
        "--log-level", "WARNING",
    ]  # fmt: skip
    started = time.perf_counter()
    process = spawn(
        command, workdir / f"{name}.log", {**variant.env(), "MODELROUTE_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    if not wait_until_up(f"http://127.0.0.1:{port}/readyz", 30, process, interval=0.005):
        stop(process)
        return f"{name} did not start (see {workdir / f'{name}.log'})"
    ready = time.perf_counter() - started
    return Target(
        name, port, "auto", headers={"x-user": "user-1234"}, processes=[process], ready_seconds=ready
    )


TICK = os.sysconf("SC_CLK_TCK")


# --- /proc: CPU and memory of a target's processes -----------------------------------------------------


def family(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids = [pid]
    for member in pids:
        with contextlib.suppress(OSError):
            pids += [int(c) for c in Path(f"/proc/{member}/task/{member}/children").read_text().split()]
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes (their own, not their reaped children's)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICK


@dataclass
class Memory:
    rss: float
    pss: float
    uss: float


def memory(pid: int) -> Memory:
    """RSS, PSS and USS (private clean + private dirty) of one process, in MiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0])
    uss = values["Private_Clean"] + values["Private_Dirty"]
    return Memory(values["Rss"] / 1024, values["Pss"] / 1024, uss / 1024)


# --- the standard phases -------------------------------------------------------------------------------

Figures = dict[str, Any]
"""requests, rps, p50_ms, p99_ms, errors of one phase."""


def chat_body(model: str, *, stream: bool = False) -> bytes:
    """The request every target gets: a short chat prompt."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def use_wrk(load: str) -> bool:
    """Whether `load` (auto, wrk, python) means wrk here."""
    return load == "wrk" or (load == "auto" and shutil.which("wrk") is not None)


def measure(
    target: Target, seconds: float, load: str, workdir: Path, connections: tuple[int, ...] = (1, 16)
) -> dict[int, Figures]:
    """Latency and throughput of `target` at each number of connections, after a short warm-up."""
    body = chat_body(target.model)
    results: dict[int, Figures] = {}
    for count in connections:
        # warm up: connection pools, caches, lazy imports
        load_phase(target, body, count, min(1.0, seconds), load, workdir)
        pids = [pid for process in target.processes for pid in family(process.pid)]
        before = cpu_seconds(pids)
        results[count] = load_phase(target, body, count, seconds, load, workdir)
        used = cpu_seconds(pids) - before
        # CPU per request moves far less than req/s on a shared box: the A/B figure to trust
        requests = results[count]["requests"]
        results[count]["cpu_us"] = used / requests * 1e6 if pids and requests else float("nan")
    return results


def load_phase(
    target: Target, body: bytes, connections: int, seconds: float, load: str, workdir: Path
) -> Figures:
    """One timed phase of the same request on `connections` keep-alive connections."""
    if use_wrk(load):
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
    result: Figures = json.loads(output)
    return result


def main() -> int:
    """The helper processes: `_upstream` (the fake upstream) and `_load` (the python load generator)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("_upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--stream-chunks", type=int, default=20)
    up.add_argument("--stream-interval", type=float, default=0.001)
    ld = sub.add_parser("_load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--path", required=True)
    ld.add_argument("--connections", type=int, required=True)
    ld.add_argument("--seconds", type=float, required=True)
    ld.add_argument("--body", required=True)
    ld.add_argument("--headers", default="{}")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.command == "_upstream":
        asyncio.run(_serve_upstream(args.port, args.stream_chunks, args.stream_interval))
        return 0
    request = _http_request(args.port, args.path, args.body.encode(), json.loads(args.headers))
    result = asyncio.run(_python_load("127.0.0.1", args.port, request, args.connections, args.seconds))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
