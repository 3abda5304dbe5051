"""Control-plane figures: compile time of a large namespace, and `kubectl apply` → ConfigMap updated.

Not a test (this machine is shared and noisy): prints medians and spreads over several runs.

    .venv/bin/python -m bench.compile_bench [--runs 9] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.kube_harness import Kubectl, OperatorProcess, new_namespace, running_control_plane, wait_for
from tests.manifests import endpoint, policy, to_yaml

from modelroute_operator.logic.compiler import NamespaceObjects, compile_namespace, parse_object

REGIONS = {"eu-west-1": ["gdpr"], "eu-central-1": ["gdpr"], "us-east-1": [], "ap-south-1": []}


def large_namespace(endpoints: int = 500, policies: int = 50) -> NamespaceObjects:
    """`endpoints` ModelEndpoints with 4 regional replicas, `policies` policies of 10 rules each."""
    eps = [parse_object(endpoint(f"model-{i:03d}", REGIONS)) for i in range(endpoints)]
    pols = []
    for p in range(policies):
        body = policy(f"policy-{p:02d}", models=[f"vm-{p:02d}"])
        body["spec"]["rules"] = [
            {
                "name": f"rule-{r}",
                "match": {"metadata": {"tier": [f"t{r}"]}} if r < 9 else {},
                "targets": [
                    {"endpoint": f"model-{(p * 10 + r + k) % endpoints:03d}", "weight": 50} for k in range(2)
                ],
                **({"fallbackTo": f"rule-{r + 1}"} if r < 9 else {}),
            }
            for r in range(10)
        ]
        pols.append(parse_object(body))
    return NamespaceObjects("bench", eps, pols, [])  # type: ignore[arg-type]


def bench_compile(runs: int) -> None:
    objects = large_namespace()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = compile_namespace(objects)
        times.append(time.perf_counter() - started)
        assert result.config is not None, result.errors[:3]
    print(
        "compile 500 endpoints x 4 replicas + 50 policies x 10 rules:"
        f" median {statistics.median(times) * 1000:.1f} ms,"
        f" min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms ({runs} runs)"
    )


def bench_apply_to_configmap(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_control_plane(Path(tmp) / "cp") as plane:
        measure_apply(Kubectl(plane), Path(tmp), runs)


def measure_apply(kubectl: Kubectl, tmp: Path, runs: int) -> None:
    """Apply a policy change `runs` times; time each until the ConfigMap carries a new version."""
    plane = kubectl.plane
    kubectl.run("apply", "--server-side", "-f", "crds/")
    kubectl.run("wait", "--for=condition=Established", "crd", "--all")
    wait_for(lambda: kubectl.run("get", "modelroute", "-A", check=False).returncode == 0, "discovery")
    ns = new_namespace(kubectl, "bench")
    op = OperatorProcess(plane, Path(tmp) / "operator.log", namespaces=[ns])
    op.start()
    try:
        kubectl.apply(to_yaml(endpoint(), policy()), ns)
        wait_for(lambda: kubectl.get("configmap", "modelroute-router-config", ns), "first config", 60)
        times = []
        for i in range(runs):
            before = kubectl.get("configmap", "modelroute-router-config", ns)
            assert before is not None
            version = before["metadata"]["annotations"]["modelroute.dev/config-version"]
            manifest = to_yaml(policy(models=["support-bot", f"change-{i}"]))
            started = time.perf_counter()
            kubectl.apply(manifest, ns)
            wait_for(
                lambda v=version: (
                    (cm := kubectl.get("configmap", "modelroute-router-config", ns))
                    and cm["metadata"]["annotations"]["modelroute.dev/config-version"] != v
                ),
                "the new config",
                interval=0.01,
            )
            times.append(time.perf_counter() - started)
        print(
            f"kubectl apply -> ConfigMap updated: median {statistics.median(times) * 1000:.0f} ms,"
            f" min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms ({runs} runs;"
            " includes kubectl start-up of ~100 ms and 10 ms polling)"
        )
    finally:
        op.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--skip-cluster", action="store_true", help="only the offline compile figure")
    args = parser.parse_args()
    bench_compile(args.runs)
    if not args.skip_cluster:
        bench_apply_to_configmap(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
