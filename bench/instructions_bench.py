"""CPU instructions per proxied request: the sidecar beside the minimal aiohttp forwarder, under callgrind.

Wall-clock figures on a shared 2-core box move by 30% from one minute to the next; instruction counts
do not (callgrind counts the user-space instructions a process executes, whatever else runs). So this
script answers "how much work does the sidecar do per request, against the yardstick" with a number
that repeats to within ~1%, and `proxy_bench.py` answers "how fast is it here, now".

Each target runs as one process (1 worker) under `valgrind --tool=callgrind` in front of the fast fake
upstream of proxy_bench; a keep-alive client sends `--warmup` requests, the counters are zeroed
(`callgrind_control -z`), `--requests` more are sent, and the counters are dumped. Kernel work (the
socket syscalls, the same count for both: 2 reads and 2 writes per request) is not counted.

    .venv/bin/python bench/instructions_bench.py                 # ~2 minutes
    .venv/bin/python bench/instructions_bench.py --requests 3000

The sidecar runs the realistic policy of proxy_bench (20 rules, residency, canary) with metrics and
the audit log on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import proxy_bench
from proxy_bench import PROMPT, REPO, free_port, spawn, stop, wait_port

START_SECONDS = 600.0
"""Python's imports under callgrind are ~50x slower: the sidecar takes a minute or two to listen."""


def post_many(port: int, model: str, count: int, headers: dict[str, str]) -> None:
    """`count` chat requests on one keep-alive connection; each must answer 200."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(count):
            connection.request(
                "POST", "/v1/chat/completions", body, {"content-type": "application/json", **headers}
            )
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"answered {response.status}")
    finally:
        connection.close()


def dumped_instructions(outdir: Path, timeout: float = 60.0) -> int:
    """The instruction total of the dump `callgrind_control -d` asked for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in outdir.glob("callgrind.*"):
            text = path.read_text(errors="replace")
            if "desc: Trigger: dump" in text:
                for line in text.splitlines():
                    if line.startswith("summary:"):
                        return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump appeared in {outdir}")


def measure(
    name: str,
    command: list[str],
    model: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    workdir: Path,
) -> int:
    """Instructions per request of one target."""
    port = free_port()
    outdir = workdir / name
    outdir.mkdir()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/callgrind.%p.%n"]
    process = spawn(valgrind + [c.replace("{port}", str(port)) for c in command], workdir / f"{name}.log")
    try:
        if not wait_port(port, START_SECONDS):
            raise RuntimeError(f"{name} did not start (see {workdir / f'{name}.log'})")
        post_many(port, model, args.warmup, headers)
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
        post_many(port, model, args.requests, headers)
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
        return dumped_instructions(outdir) // args.requests
    finally:
        stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="measured requests (default 1000)")
    parser.add_argument("--warmup", type=int, default=300, help="requests before counting (default 300)")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind not found (Debian: apt-get install -y valgrind)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="modelroute-instructions-"))
    upstream_port = free_port()
    upstream = spawn(
        [sys.executable, proxy_bench.__file__, "_upstream", "--port", str(upstream_port)],
        workdir / "upstream.log",
    )
    config = workdir / "routerConfig.json"
    config.write_text(proxy_bench.realistic_config(upstream_port))
    forwarder = (
        f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import minimal_forwarder; "
        f"minimal_forwarder.serve({{port}}, 'http://127.0.0.1:{upstream_port}/v1', 'fake-model')"
    )
    sidecar = [
        sys.executable, "-m", "modelroute_sidecar.main", "--port", "{port}", "--admin-port", "0",
        "--config-file", str(config), "--region", "eu-west", "--workers", "1",
        "--audit-log", str(workdir / "audit.jsonl"), "--log-level", "WARNING",
    ]  # fmt: skip
    targets = {
        "forwarder": ([sys.executable, "-c", forwarder], "fake-model", {}),
        "sidecar": (sidecar, "auto", {"x-user": "user-1234"}),
    }
    results: dict[str, int] = {}
    try:
        if not wait_port(upstream_port, 10):
            print("fake upstream did not start", file=sys.stderr)
            return 1
        for name, (command, model, headers) in targets.items():
            print(f"{name} ...", flush=True)
            results[name] = measure(name, command, model, headers, args, workdir)
    finally:
        stop(upstream)
    print()
    print(f"instructions per request (callgrind, 1 worker, {args.requests} requests after {args.warmup})")
    for name, count in results.items():
        print(f"{name:<10} {count:>9,}   {count / results['forwarder']:.2f}x forwarder")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
