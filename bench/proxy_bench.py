"""Proxy benchmark: the router sidecar beside direct calls, nginx and the LiteLLM proxy, in one run.

Every target sits in front of the same fast fake upstream (a raw uvloop HTTP server in its own process
that answers any POST with a fixed chat completion). For each target the load generator measures
latency at 1 connection and throughput at 16 connections, then the script prints p50/p99 added latency
(against direct calls) and req/s with ratios.

    .venv/bin/python bench/proxy_bench.py                # everything found on this machine
    .venv/bin/python bench/proxy_bench.py --seconds 3 --skip litellm
    .venv/bin/python bench/proxy_bench.py --skip litellm nginx --variant 3.11=.venv311/bin/python --rounds 5

Targets: `direct`; `nginx` (Debian's nginx, skipped with a note when not installed); `litellm`
(`litellm[proxy]` from PyPI, installed on first use into ~/.cache/modelroute/bench-venv so it never
touches the project's venv; skipped with a note when that fails); `forwarder-1w` and `forwarder-2w`
(the minimal aiohttp + uvloop forwarder of DESIGN.md, bench/minimal_forwarder.py); `sidecar-1w` and
`sidecar-2w` (the sidecar with a realistic policy: 20 rules, residency with all four detectors, a
canary, metrics and a JSON-lines audit log on; 1 and 2 SO_REUSEPORT workers); `sidecar-1w+learned`
(the same policy with a semantic rule first and its complexity rules on the builtin difficulty model,
so every request is embedded: what learned routing costs; `sidecar-1w` is the same build without it);
`sidecar-1w+shadow` (the same policy with its default rule mirroring every request to a shadow endpoint
on the same fake upstream: what shadow traffic costs the sidecar's worker).
The load generator is `wrk` when installed, else a small keep-alive asyncio client (`--load python`
forces it). Every phase is bounded in time.

A/B: `--variant NAME=PYTHON[:TREE]` also runs the sidecar with another interpreter (and source tree,
put first on PYTHONPATH) as `sidecar-Nw@NAME`, and prints its ratios against this build (or, with
`--skip sidecar-1w sidecar-2w`, against the first variant); `--rounds N` measures every target N
times, taking turns, and reports medians, which a loaded machine needs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    from bench.harness import (
        Figures,
        Target,
        Variant,
        free_port,
        measure,
        spawn,
        start_forwarder,
        start_nginx,
        start_sidecar,
        start_upstream,
        stop,
        use_wrk,
        wait_until_up,
    )
except ModuleNotFoundError:  # run as `python bench/proxy_bench.py`: bench/ itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        Figures,
        Target,
        Variant,
        free_port,
        measure,
        spawn,
        start_forwarder,
        start_nginx,
        start_sidecar,
        start_upstream,
        stop,
        use_wrk,
        wait_until_up,
    )

BENCH_VENV = Path.home() / ".cache" / "modelroute" / "bench-venv"


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


def report(rows: list[tuple[str, dict[int, Figures]]], notes: list[str], load: str) -> str:
    direct = dict(rows).get("direct")
    litellm = next((r for name, r in rows if name.startswith("litellm")), None)
    # the minimal forwarder with the same number of workers, keyed by "1w" / "2w"
    forwarders = {name.split("-", 1)[1]: r for name, r in rows if name.startswith("forwarder-")}
    lines = [
        f"load generator: {load}; 2-core box shared by generator, proxy and upstream",
        f"{'target':<16} {'p50@1':>8} {'p99@1':>8} {'+p50@1':>8} {'+p99@1':>8} {'req/s@16':>10} "
        f"{'p50@16':>8} {'p99@16':>8} {'vs direct':>9} {'vs litellm':>10} {'vs fwd':>6} {'cpu/req':>8} "
        f"{'errors':>6}",
    ]
    for name, result in rows:
        one, many = result[1], result[16]
        added50 = one["p50_ms"] - direct[1]["p50_ms"] if direct else float("nan")
        added99 = one["p99_ms"] - direct[1]["p99_ms"] if direct else float("nan")
        vs_direct = many["rps"] / direct[16]["rps"] if direct else float("nan")
        vs_litellm = many["rps"] / litellm[16]["rps"] if litellm and litellm[16]["rps"] else float("nan")
        forwarder = forwarders.get(name.rsplit("-", 1)[-1].split("@")[0])
        vs_fwd = many["rps"] / forwarder[16]["rps"] if forwarder and forwarder[16]["rps"] else float("nan")
        lines.append(
            f"{name:<16} {one['p50_ms']:8.3f} {one['p99_ms']:8.3f} {added50:8.3f} {added99:8.3f} "
            f"{many['rps']:10.0f} {many['p50_ms']:8.3f} {many['p99_ms']:8.3f} {vs_direct:9.3f} "
            f"{vs_litellm:10.1f} {vs_fwd:6.2f} {many.get('cpu_us', float('nan')):8.1f} "
            f"{one['errors'] + many['errors']:6d}"
        )
    lines.append(
        "latencies in ms; +p50/+p99: added over direct at 1 connection; "
        "vs fwd: req/s over the minimal aiohttp forwarder with as many workers; "
        "cpu/req: CPU us per request at 16 connections, all of the target's processes"
    )
    lines += variant_ratios(rows, direct)
    lines += [f"skipped: {note}" for note in notes]
    return "\n".join(lines)


def variant_ratios(
    rows: list[tuple[str, dict[int, Figures]]], direct: dict[int, Figures] | None
) -> list[str]:
    """A/B lines: each `sidecar-Nw@NAME` against `sidecar-Nw` of this tree and interpreter, or, when
    that was skipped, against the first variant with as many workers."""
    measured = dict(rows)
    lines = []
    for name, result in rows:
        base_name, at, variant = name.partition("@")
        if not at:
            continue
        reference = (
            base_name if base_name in measured else next(n for n, _ in rows if n.startswith(base_name))
        )
        base = measured[reference]
        if reference == name:
            continue
        label = "this build" if reference == base_name else reference.partition("@")[2]
        rps = base[16]["rps"] / result[16]["rps"] if result[16]["rps"] else float("nan")
        cpu = base[16].get("cpu_us", float("nan")) / result[16].get("cpu_us", float("nan"))
        line = f"A/B {base_name}: {label} / {variant}: req/s@16 {rps:.3f}x, CPU per request {cpu:.3f}x"
        if direct is not None:
            added_base = base[1]["p50_ms"] - direct[1]["p50_ms"]
            added_variant = result[1]["p50_ms"] - direct[1]["p50_ms"]
            line += f", +p50@1 {added_base:.3f} vs {added_variant:.3f} ms"
        lines.append(line)
    return lines


def median_figures(results: list[dict[int, Figures]]) -> dict[int, Figures]:
    """Each figure's median over rounds (errors summed)."""
    merged: dict[int, Figures] = {}
    for connections in results[0]:
        phases = [r[connections] for r in results]
        merged[connections] = {
            key: sum(p[key] for p in phases)
            if key in ("errors", "requests")
            else statistics.median(p[key] for p in phases)
            for key in phases[0]
        }
    return merged


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
    try:
        upstream_port, upstream = start_upstream(workdir)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    notes: list[str] = []
    starters: dict[str, Callable[[], Target | str]] = {
        "direct": lambda: Target("direct", upstream_port, "fake-model"),
        "nginx": lambda: start_nginx(upstream_port, workdir),
        "litellm": lambda: start_litellm(upstream_port, workdir, 1),
        "forwarder-1w": lambda: start_forwarder(upstream_port, workdir, 1),
        "forwarder-2w": lambda: start_forwarder(upstream_port, workdir, 2),
        "sidecar-1w": lambda: start_sidecar(upstream_port, workdir, 1),
        "sidecar-2w": lambda: start_sidecar(upstream_port, workdir, 2),
        # every request reaches a semantic rule and learned-score rules: the cost of learned routing
        "sidecar-1w+learned": lambda: start_sidecar(upstream_port, workdir, 1, learned=True),
        # every request is mirrored to a shadow endpoint (on the same fake upstream): what a copy costs
        "sidecar-1w+shadow": lambda: start_sidecar(upstream_port, workdir, 1, shadow=100.0),
    }
    for variant in args.variant:
        for workers in (1, 2):
            starters[f"sidecar-{workers}w@{variant.name}"] = functools.partial(
                start_sidecar, upstream_port, workdir, workers, variant
            )
    load = "wrk" if use_wrk(args.load) else "python asyncio client"
    measured: dict[str, list[dict[int, Figures]]] = {}
    try:
        for round_ in range(args.rounds):
            for name, starter in starters.items():
                if name in args.skip or name.split("-")[0] in args.skip:
                    if round_ == 0:
                        notes.append(f"{name}: --skip")
                    continue
                print(f"{name} ..." if args.rounds == 1 else f"{name} (round {round_ + 1}) ...", flush=True)
                with running(starter(), notes) as target:
                    if target is None:
                        continue
                    try:
                        result = measure(target, args.seconds, args.load, workdir)
                    except (subprocess.SubprocessError, OSError, ValueError, AttributeError) as exc:
                        notes.append(f"{name}: measuring failed: {exc!r}")
                        continue
                    measured.setdefault(target.name, []).append(result)
                    print(
                        f"  1 conn p50 {result[1]['p50_ms']:.3f} ms; 16 conns {result[16]['rps']:.0f} req/s",
                        flush=True,
                    )
    finally:
        stop(upstream)
    rows = [(name, median_figures(results)) for name, results in measured.items()]
    if args.rounds > 1:
        notes.insert(0, f"figures are medians over {args.rounds} rounds, the targets taking turns")
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
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase (default 5)")
    parser.add_argument("--skip", nargs="*", default=[], help="targets to skip: nginx litellm sidecar ...")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every target this many times, taking turns; report medians",
    )
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        default=[],
        metavar="NAME=PYTHON[:TREE]",
        help="also run the sidecar with this interpreter (and source tree), as sidecar-Nw@NAME",
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
