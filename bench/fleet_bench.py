"""Fleet limits benchmark: the sidecar with per-pod tenant limits only beside the same sidecar with fleet
limits and budgets counted in a real redis-server, in one run, and their ratios.

Both run the realistic config of `harness.realistic_config` in front of the same fake upstream; the fleet
target adds `fleetLimits` to its policy (a per-tenant request and token limit, a daily and a monthly
budget, a policy-wide quota: every admission checks five meters) and talks to a private redis-server on
a loopback port (Debian's `redis-server`, `scripts/system-packages fleet`). Limits are set high so that
nothing is refused: the figures are the cost of counting.

    .venv/bin/python bench/fleet_bench.py --seconds 3
    .venv/bin/python bench/fleet_bench.py --seconds 3 --rounds 3 --workers 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet_store import RedisServer  # noqa: E402

from bench.harness import (  # noqa: E402
    ADMIN_TOKEN,
    Figures,
    Target,
    free_port,
    measure,
    realistic_config,
    spawn,
    start_upstream,
    stop,
    wait_until_up,
)

TENANT = {"x-modelroute-tenant": "bench-tenant", "x-user": "user-1234"}
FLEET = {
    "failMode": "open",
    "tenants": [
        {
            "requestsPerMinute": 100_000_000,
            "tokensPerMinute": 1_000_000_000,
            "daily": {"hardUsd": 1e8, "softUsd": 9e7},
            "monthly": {"hardUsd": 1e9},
        }
    ],
    "policy": {"requestsPerMinute": 100_000_000},
}


def config_text(upstream: int, fleet: bool) -> str:
    from modelroute_contract import RouterConfig

    document = json.loads(realistic_config(upstream))
    document.pop("version")
    if fleet:
        document["policies"][0]["fleetLimits"] = FLEET
    return RouterConfig.model_validate(document).seal().to_json()


def start(upstream: int, workdir: Path, workers: int, store: RedisServer | None) -> Target | str:
    name = f"{'fleet' if store else 'local'}-{workers}w"
    port = free_port()
    config = workdir / f"{name}.json"
    config.write_text(config_text(upstream, store is not None))
    command = [
        sys.executable, "-m", "modelroute_sidecar.main", "--port", str(port), "--admin-port", "0",
        "--config-file", str(config), "--region", "eu-west", "--workers", str(workers),
        "--audit-log", str(workdir / f"audit-{name}.jsonl"), "--log-level", "WARNING",
    ]  # fmt: skip
    env = {"MODELROUTE_ADMIN_TOKEN": ADMIN_TOKEN}
    if store is not None:
        env["MODELROUTE_FLEET_STORE_URL"] = store.url
        env["MODELROUTE_FLEET_STORE_PASSWORD_FILE"] = str(store.password_file)
    process = spawn(command, workdir / f"{name}.log", env)
    if not wait_until_up(f"http://127.0.0.1:{port}/readyz", 30, process, interval=0.005):
        stop(process)
        return f"{name} did not start (see {workdir / f'{name}.log'})"
    return Target(name, port, "auto", headers=TENANT, processes=[process])


def median(results: list[dict[int, Figures]]) -> dict[int, Figures]:
    return {c: {k: statistics.median(r[c][k] for r in results) for k in results[0][c]} for c in results[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1, help="take turns this many times; report medians")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed: scripts/system-packages fleet (as root)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="modelroute-fleet-bench-"))
    upstream_port, upstream = start_upstream(workdir)
    store = RedisServer(workdir / "redis").start()
    measured: dict[str, list[dict[int, Figures]]] = {}
    errors: dict[str, float] = {}
    try:
        for round_ in range(args.rounds):
            for workers in args.workers:
                for with_store in (None, store):
                    target = start(upstream_port, workdir, workers, with_store)
                    if isinstance(target, str):
                        print(target, file=sys.stderr)
                        return 1
                    try:
                        print(f"{target.name} (round {round_ + 1}) ...", flush=True)
                        result = measure(target, args.seconds, args.load, workdir)
                        measured.setdefault(target.name, []).append(result)
                        errors[target.name] = errors.get(target.name, 0) + sum(
                            r["errors"] for r in result.values()
                        )
                    finally:
                        for process in target.processes:
                            stop(process)
        client = store.client()
        keys = client.keys("modelroute:*")
        spend_keys = [k for k in keys if ":s:" in k]
        spent = sum(float(v) for k in spend_keys for v in client.hvals(k))
    finally:
        store.kill()
        stop(upstream)
    rows: dict[str, dict[int, Figures]] = {name: median(results) for name, results in measured.items()}
    print()
    columns = ("p50 1c ms", "p99 1c ms", "req/s 16c", "p99 16c ms", "cpu us/req")
    print(f"{'target':<10} " + " ".join(f"{c:>11}" for c in columns))
    for name, row in rows.items():
        one, many = row[1], row[16]
        print(
            f"{name:<10} {one['p50_ms']:>11.3f} {one['p99_ms']:>11.3f} {many['rps']:>11.0f} "
            f"{many['p99_ms']:>11.3f} {many['cpu_us']:>11.0f}"
        )
    print()
    for workers in args.workers:
        local, fleet = rows.get(f"local-{workers}w"), rows.get(f"fleet-{workers}w")
        if local is None or fleet is None:
            continue
        print(
            f"{workers} worker(s): fleet/local req/s {fleet[16]['rps'] / local[16]['rps']:.2f}x; "
            f"p50 at 1 conn {fleet[1]['p50_ms'] - local[1]['p50_ms']:+.3f} ms, "
            f"p99 at 1 conn {fleet[1]['p99_ms'] - local[1]['p99_ms']:+.3f} ms; "
            f"CPU per request {fleet[16]['cpu_us'] / local[16]['cpu_us']:.2f}x"
        )
    info: dict[str, Any] = {"errors": errors, "store keys": len(keys), "spend in store USD": round(spent, 6)}
    print(f"notes: {info}; figures are medians over {args.rounds} round(s)")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
