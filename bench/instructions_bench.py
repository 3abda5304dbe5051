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
    .venv/bin/python bench/instructions_bench.py --skip-forwarder --variant 3.11=.venv311/bin/python
    .venv/bin/python bench/instructions_bench.py --stream     # per relayed stream event
    .venv/bin/python bench/instructions_bench.py --stream --keep --requests 300   # then callgrind_annotate
    .venv/bin/python bench/instructions_bench.py --skip-forwarder --shadow 100   # what a shadow copy costs

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

try:
    from bench.harness import (
        PROMPT,
        REPO,
        THIS,
        Variant,
        free_port,
        realistic_config,
        spawn,
        start_upstream,
        stop,
        wait_port,
    )
except ModuleNotFoundError:  # run as `python bench/instructions_bench.py`: bench/ itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        PROMPT,
        REPO,
        THIS,
        Variant,
        free_port,
        realistic_config,
        spawn,
        start_upstream,
        stop,
        wait_port,
    )  # fmt: skip

STREAM_CHUNKS = 100
STREAM_EVENTS = STREAM_CHUNKS + 2
"""Events of one streamed answer of the fake upstream (`--stream`): the deltas, the finish, [DONE]."""
START_SECONDS = 600.0
"""Python's imports under callgrind are ~50x slower: the sidecar takes a minute or two to listen."""


def post_many(port: int, model: str, count: int, headers: dict[str, str], stream: bool = False) -> None:
    """`count` chat requests on one keep-alive connection; each must answer 200 (and a stream end
    with `[DONE]`)."""
    request = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    if stream:
        request["stream"] = True
    body = json.dumps(request)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(count):
            connection.request(
                "POST", "/v1/chat/completions", body, {"content-type": "application/json", **headers}
            )
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"answered {response.status}")
            if stream and b"data: [DONE]" not in answer:
                raise RuntimeError("a stream ended without [DONE]")
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
    env: dict[str, str] | None = None,
) -> int:
    """Instructions per request of one target."""
    port = free_port()
    outdir = workdir / name
    outdir.mkdir()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/callgrind.%p.%n"]
    command = valgrind + [c.replace("{port}", str(port)) for c in command]
    process = spawn(command, workdir / f"{name}.log", env)
    try:
        if not wait_port(port, START_SECONDS):
            raise RuntimeError(f"{name} did not start (see {workdir / f'{name}.log'})")
        post_many(port, model, args.warmup, headers, args.stream)
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
        post_many(port, model, args.requests, headers, args.stream)
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
        per = args.requests * (STREAM_EVENTS if args.stream else 1)
        return dumped_instructions(outdir) // per
    finally:
        stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="measured requests (default 1000)")
    parser.add_argument("--warmup", type=int, default=300, help="requests before counting (default 300)")
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        default=[],
        metavar="NAME=PYTHON[:TREE]",
        help="also count the sidecar run by this interpreter (and source tree), as sidecar@NAME",
    )
    parser.add_argument("--skip-forwarder", action="store_true", help="count the sidecar(s) only")
    parser.add_argument(
        "--shadow",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="also count the sidecar whose default rule mirrors PERCENT of its requests (sidecar+shadow)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help=f"streamed answers ({STREAM_EVENTS} events each): instructions per relayed event",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the callgrind dumps (for callgrind_annotate) and say where"
    )
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind not found (Debian: apt-get install -y valgrind)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="modelroute-instructions-"))
    # streamed events far enough apart that each is relayed on its own even at callgrind's pace
    upstream_port, upstream = start_upstream(
        workdir, stream_chunks=STREAM_CHUNKS, stream_interval=0.005 if args.stream else 0.001
    )
    config = workdir / "routerConfig.json"
    config.write_text(realistic_config(upstream_port))
    forwarder = (
        f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import minimal_forwarder; "
        f"minimal_forwarder.serve({{port}}, 'http://127.0.0.1:{upstream_port}/v1', 'fake-model')"
    )

    shadowed = workdir / "routerConfig-shadow.json"
    if args.shadow:
        shadowed.write_text(realistic_config(upstream_port, shadow=args.shadow))

    def sidecar(variant: Variant, config: Path = config) -> list[str]:
        return [
            variant.python, "-m", "modelroute_sidecar.main", "--port", "{port}", "--admin-port", "0",
            "--config-file", str(config), "--region", "eu-west", "--workers", "1",
            "--audit-log", str(workdir / f"audit{variant.name}.jsonl"), "--log-level", "WARNING",
        ]  # fmt: skip

    targets: dict[str, tuple[list[str], str, dict[str, str], dict[str, str]]] = {}
    if not args.skip_forwarder and not args.stream:  # the forwarder does not stream
        targets["forwarder"] = ([sys.executable, "-c", forwarder], "fake-model", {}, {})
    targets["sidecar"] = (sidecar(THIS), "auto", {"x-user": "user-1234"}, {})
    if args.shadow:
        targets["sidecar+shadow"] = (sidecar(THIS, shadowed), "auto", {"x-user": "user-1234"}, {})
    for variant in args.variant:
        targets[f"sidecar@{variant.name}"] = (
            sidecar(variant),
            "auto",
            {"x-user": "user-1234"},
            variant.env(),
        )
    results: dict[str, int] = {}
    try:
        for name, (command, model, headers, env) in targets.items():
            print(f"{name} ...", flush=True)
            results[name] = measure(name, command, model, headers, args, workdir, env)
    finally:
        stop(upstream)
    print()
    unit = f"relayed event ({STREAM_EVENTS} a stream)" if args.stream else "request"
    print(f"instructions per {unit} (callgrind, 1 worker, {args.requests} requests after {args.warmup})")
    for name, count in results.items():
        versus = [
            f"{count / results[other]:.3f}x {other}" for other in ("forwarder", "sidecar") if other in results
        ]
        print(f"{name:<16} {count:>9,}   " + "   ".join(v for v in versus if not v.endswith(f"x {name}")))
    if args.keep:
        print(f"callgrind dumps kept in {workdir}/<target>/ (callgrind_annotate --inclusive=yes <file>)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
