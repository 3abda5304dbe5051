"""The demo: the operator, fake regional models, a router sidecar and live traffic with a region taken
down halfway, on the real single-node cluster when this machine can run one, else on a local plane.

On the real cluster (`scripts/cluster`: kubelet, containerd, runc; needs root and the node binaries):
1. builds the images without a Docker daemon (`scripts/images`: operator, sidecar, and the demo's app
   with the official openai SDK), brings the cluster up (or uses the one that is up) and `helm install`s
   the chart, watching the namespace `demo`;
2. starts fake OpenAI-compatible model servers for three regions on the host side of the node's link
   and applies `examples/multi-region-eu-residency` with its replica URLs pointed at them;
3. deploys an application into `demo` (labelled for injection): the webhook adds the router sidecar
   and sets `OPENAI_BASE_URL`; `kubectl wait --for=condition=Ready routingpolicy/assistant` returns once
   that sidecar runs the config;
4. sends traffic from inside the app pod with the openai SDK and prints each decision: endpoint,
   region, rule, data class, attempts, latency;
5. takes eu-west-1 down: EU personal data fails over to eu-central-1 only, never to the US; then
   eu-central-1 too: EU personal data fails closed with a 503 and the reason, public traffic still
   flows to the US; the operator's probes drain both EU replicas and its Events say so;
6. cleans up what it made (the release, the namespace, the fakes; the cluster if it started it).

Without root or the node binaries it says why and runs the same story on a local kube-apiserver + etcd
with the operator and a sidecar as local processes (simulated pods). `--local` asks for that,
`--cluster` refuses to fall back. `--keep` leaves everything running. Run with `scripts/demo` (it
bootstraps what is missing).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.kube_harness import (  # noqa: E402
    Kubectl,
    OperatorProcess,
    SidecarProcess,
    UpstreamProcess,
    create_pod,
    free_port,
    running_control_plane,
    set_pod_status,
    wait_for,
)

EXAMPLE = REPO / "examples" / "multi-region-eu-residency"
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
NAMESPACE = "demo"

PROMPTS = [
    ("public", {}, "Summarise the plot of Hamlet in two sentences."),
    ("e-mail in prompt", {}, "Draft a reply to jane.doe@example.com about her refund."),
    ("tenant default", {"x-modelroute-tenant": "acme-gmbh"}, "What are your opening hours?"),
    ("declared header", {"x-modelroute-data-class": "eu-personal"}, "Check this customer record."),
]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def manifests_for(upstreams: dict[str, Any]) -> str:
    """The example's objects with every replica URL pointing at the fake server of its region (anything
    with a `url`)."""
    docs = []
    for file in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if not doc:
                continue
            doc = copy.deepcopy(doc)
            if doc["kind"] == "ModelEndpoint":
                for replica in doc["spec"]["replicas"]:
                    replica["url"] = upstreams[replica["region"]].url
                # The fakes answer /v1/models; probe that.
                doc["spec"]["healthCheck"] = {
                    "path": "/v1/models",
                    "interval": "2s",
                    "timeout": "1s",
                    "healthyThreshold": 1,
                    "unhealthyThreshold": 2,
                }
            docs.append(doc)
    return yaml.safe_dump_all(docs, sort_keys=False)


def send(client: Any, label: str, headers: dict[str, str], prompt: str) -> None:
    import openai

    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="assistant", messages=[{"role": "user", "content": prompt}], extra_headers=headers
        )
        h = {
            k: raw.headers.get(f"x-modelroute-{k}", "")
            for k in ("endpoint", "region", "rule", "data-class", "attempts")
        }
        ms = (time.perf_counter() - started) * 1000
        print(
            f"  {label:<17} 200  {h['endpoint']:<10} {h['region']:<13} {h['rule']:<12} {h['data-class']:<12}"
            f" attempts={h['attempts']} {ms:6.1f} ms"
        )
    except openai.APIStatusError as exc:
        ms = (time.perf_counter() - started) * 1000
        message = exc.body.get("message", "") if isinstance(exc.body, dict) else str(exc.body)
        print(f"  {label:<17} {exc.status_code}  {'-':<10} {'-':<13} {'-':<12} {'-':<12} {ms:17.1f} ms")
        print(f"  {'':<17} -> {message}")


def eu_unhealthy(kubectl: Kubectl) -> int:
    """How many EU replicas of llama-70b the operator's probes have marked unhealthy."""
    health = kubectl.run(
        "get", "modelendpoint", "llama-70b", "-n", NAMESPACE, "-o", "jsonpath={.status.replicas[*].health}"
    ).stdout.split()
    regions = kubectl.run(
        "get", "modelendpoint", "llama-70b", "-n", NAMESPACE, "-o", "jsonpath={.status.replicas[*].region}"
    ).stdout.split()
    return sum(1 for h, r in zip(health, regions, strict=False) if h == "Unhealthy" and r.startswith("eu-"))


def policy_sync(kubectl: Kubectl) -> str:
    return str((kubectl.get("routingpolicy", "assistant", NAMESPACE) or {}).get("status", {}).get("sync", ""))


def traffic(client: Any, rounds: int = 2) -> None:
    print(f"  {'request':<17} code {'endpoint':<10} {'region':<13} {'rule':<12} {'data class':<12}")
    for _ in range(rounds):
        for label, headers, prompt in PROMPTS:
            send(client, label, headers, prompt)


def run_local(keep: bool) -> int:
    import openai

    with tempfile.TemporaryDirectory(prefix="modelroute-demo-") as tmp:
        work = Path(tmp)
        say("Starting a local Kubernetes control plane (kube-apiserver + etcd)")
        with running_control_plane(work / "control-plane") as plane:
            kubectl = Kubectl(plane)
            print(f"  {kubectl.run('version').stdout.strip().splitlines()[-1]}")
            kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
            kubectl.run("wait", "--for=condition=Established", "crd", "--all")
            wait_for(lambda: kubectl.run("get", "modelroute", "-A", check=False).returncode == 0, "CRDs")
            kubectl.run("create", "namespace", NAMESPACE)

            say("Starting fake model servers in three regions")
            upstreams = {r: UpstreamProcess(r, free_port(), work / f"upstream-{r}.log") for r in REGIONS}
            for region, up in upstreams.items():
                up.start()
                print(f"  {region:<13} {up.url}")

            operator = OperatorProcess(plane, work / "operator.log", namespaces=[NAMESPACE])
            sidecar: SidecarProcess | None = None
            try:
                say("Running the operator and applying examples/multi-region-eu-residency")
                operator.start()
                kubectl.apply(manifests_for(upstreams), NAMESPACE)
                kubectl.run(
                    "wait", "-n", NAMESPACE, "--for=condition=Ready", "modelroute", "--all", "--timeout=60s"
                )
                print(kubectl.run("get", "modelroute", "-n", NAMESPACE).stdout)

                say("Starting a router sidecar (pod app-0, region eu-west-1)")
                secret = wait_for(
                    lambda: kubectl.get("secret", "modelroute-sidecar-admin", NAMESPACE), "token"
                )
                sidecar = SidecarProcess(
                    name="app-0",
                    ip="127.0.0.2",
                    port=free_port(),
                    admin_port=free_port(),
                    region="eu-west-1",
                    workdir=work,
                    namespace=NAMESPACE,
                    token=base64.b64decode(secret["data"]["token"]).decode(),
                )
                create_pod(kubectl, NAMESPACE, "app-0", sidecar.admin_port)
                sidecar.start()
                set_pod_status(kubectl, NAMESPACE, "app-0", sidecar.ip, True)
                wait_for(
                    lambda: (
                        (kubectl.get("routingpolicy", "assistant", NAMESPACE) or {})
                        .get("status", {})
                        .get("sync")
                        == "1/1"
                    ),
                    "the operator to sync the sidecar",
                    30,
                )
                print(kubectl.run("get", "routingpolicy", "-n", NAMESPACE).stdout)

                client = openai.OpenAI(base_url=sidecar.base_url, api_key="demo", max_retries=0, timeout=30)
                say("Live traffic: every region healthy")
                traffic(client)

                say("eu-west-1 goes down: EU personal data fails over to eu-central-1, never to the US")
                upstreams["eu-west-1"].kill()
                traffic(client)

                say("eu-central-1 goes down too: EU personal data fails closed; public traffic still flows")
                upstreams["eu-central-1"].kill()
                traffic(client, rounds=1)

                say("Active health checks drain both EU regions; the sidecar gets the new config")
                wait_for(lambda: eu_unhealthy(kubectl) == 2, "health checks to drain both EU replicas", 30)
                print(kubectl.run("get", "modelendpoint", "-n", NAMESPACE).stdout)
                wait_for(lambda: policy_sync(kubectl) == "1/1", "the sidecar to run the drained config", 30)
                traffic(client, rounds=1)
                print(
                    kubectl.run(
                        "get",
                        "events",
                        "-n",
                        NAMESPACE,
                        "--field-selector",
                        "involvedObject.kind=ModelEndpoint",
                        "-o",
                        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
                    ).stdout
                )
                if keep:
                    say(f"Still running; KUBECONFIG={plane.kubeconfig}; press Ctrl-C to stop")
                    while True:
                        time.sleep(3600)
            finally:
                if sidecar is not None:
                    sidecar.stop()
                operator.stop()
                for up in upstreams.values():
                    up.kill()
    say("Done")
    return 0


# ------------------------------------------------------------------------------ the real cluster

sys.path.insert(0, str(REPO / "scripts"))
CLUSTER_TOOLS = ("containerd", "runc", "ctr", "buildah", "mmdebstrap", "umoci", "iptables", "ip", "nsenter")
RELEASE, RELEASE_NS = "demo", "modelroute-demo"
APP_IMAGE = "modelroute/demo-app:0.1.0"
APP = "/opt/modelroute-demo/app.py"


def cluster_unavailable() -> str:
    """Why this machine cannot run the real-cluster demo ("" when it can)."""
    if os.geteuid() != 0:
        return "it needs root (a network namespace, containerd and a kubelet)"
    import cluster

    k8s = cluster.CACHE / "k8s" / cluster.K8S_VERSION
    missing = [b for b in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "kubectl")
               if not (k8s / b).exists()]
    if missing:
        return f"the node binaries are not built ({', '.join(missing)} not in {k8s})"
    tools = [t for t in CLUSTER_TOOLS if shutil.which(t) is None]
    if tools:
        return f"missing {', '.join(tools)} (Debian packages: scripts/system-packages images cluster)"
    if cluster.netns_exists() and not (cluster.STATE / "up").exists():
        return f"the network namespace {cluster.NETNS} exists but not this checkout's cluster"
    return ""


@dataclass
class NodePlane:
    """The real cluster as tests.kube_harness.Kubectl expects a plane (kubectl, kubeconfig, env)."""

    state: Path
    bin_dir: Path

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    def kubectl_env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@dataclass
class HostModel:
    """A fake model server on the host side of the node's link: pods reach it, nothing else does."""

    region: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        import cluster

        return f"http://{cluster.HOST_IP}:{self.port}/v1"

    def start(self) -> None:
        import cluster

        argv = [sys.executable, "-m", "tests.fakes.upstream", "--host", cluster.HOST_IP,
                "--port", str(self.port), "--name", self.region]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(self._answers, f"the fake model in {self.region}", 20)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Clock:
    """Wall time of each phase, printed at the end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: list[tuple[str, float]] = []
        self._mark = self.started

    def lap(self, what: str) -> None:
        now = time.monotonic()
        self.phases.append((what, now - self._mark))
        self._mark = now

    def report(self) -> None:
        say(f"Took {time.monotonic() - self.started:.0f} s")
        for what, seconds in self.phases:
            print(f"  {what:<52} {seconds:6.1f} s")


def app_deployment() -> str:
    """The application: the demo app image, an ordinary OpenAI SDK program; its pod is in eu-west-1."""
    hardened = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat"},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"},
                             "annotations": {"modelroute.dev/region": "eu-west-1"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "app", "image": APP_IMAGE, "imagePullPolicy": "Never",
                        "command": ["python3", APP, "serve"], "securityContext": hardened,
                    }],
                },
            },
        },
    })  # fmt: skip


def pod_traffic(kubectl: Kubectl, rounds: int) -> None:
    """The app's own requests (openai SDK, inside its pod, through the injected sidecar), as a table."""
    proc = kubectl.run("exec", "-n", NAMESPACE, "deploy/chat", "-c", "app", "--", "python3", APP, "traffic",
                       str(rounds))  # fmt: skip
    print(f"  {'request':<17} code {'endpoint':<10} {'region':<13} {'rule':<12} {'data class':<12}")
    for raw in proc.stdout.splitlines():
        line = json.loads(raw)
        if "label" not in line:
            continue
        if line["status"] == 200:
            print(
                f"  {line['label']:<17} 200  {line['endpoint']:<10} {line['region']:<13} {line['rule']:<12}"
                f" {line['data-class']:<12} attempts={line['attempts']} {line['ms']:6.1f} ms"
            )
        else:
            print(f"  {line['label']:<17} {line['status']}  {'-':<10} {'-':<13} {'-':<12} {'-':<12}"
                  f" {line['ms']:17.1f} ms")  # fmt: skip
            print(f"  {'':<17} -> {line.get('message', '')}")


def namespace_phase(kubectl: Kubectl, namespace: str) -> str:
    """`Active`, `Terminating`, or "" when the namespace does not exist."""
    proc = kubectl.run("get", "namespace", namespace, "-o", "jsonpath={.status.phase}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def namespace_gone(kubectl: Kubectl, namespace: str, timeout: float = 90) -> None:
    """Wait until `namespace` no longer exists (a Terminating one finishes: the cluster has a
    namespace controller)."""
    wait_for(lambda: not namespace_phase(kubectl, namespace), f"namespace {namespace} to be deleted", timeout)


def cluster_events(kubectl: Kubectl) -> str:
    """The Events the operator recorded on our objects in the demo namespace, oldest first."""
    events = kubectl.json("get", "events", "-n", NAMESPACE)["items"]
    ours = [e for e in events if e["involvedObject"]["kind"] in ("ModelEndpoint", "RoutingPolicy", "Canary")]
    ours.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    lines = [f"  {'TYPE':<8} {'OBJECT':<24} {'REASON':<17} MESSAGE"]
    for e in ours:
        what = f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}"
        lines.append(f"  {e['type']:<8} {what:<24} {e['reason']:<17} {e['message']}")
    return "\n".join(lines)


@contextlib.contextmanager
def node_cluster(clock: Clock) -> Iterator[NodePlane]:
    """The cluster of `scripts/cluster`, up for the block; brought down after unless it was up before."""
    import cluster

    was_up = (cluster.STATE / "up").exists() and all(cluster.alive(c) for c in cluster.COMPONENTS)
    if was_up:
        print("  the cluster of this checkout is already up: using it, and leaving it up")
        imported = cluster.import_images()  # this run's images
        print(f"  images imported into containerd: {', '.join(sorted(imported))}")
    else:
        subprocess.run([sys.executable, str(REPO / "scripts" / "cluster.py"), "up"], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    clock.lap("cluster up" + (" (already up)" if was_up else ""))
    try:
        yield NodePlane(cluster.STATE, cluster.CACHE / "k8s" / cluster.K8S_VERSION)
    finally:
        if not was_up:
            say("Bringing the cluster down (scripts/cluster down)")
            subprocess.run([sys.executable, str(REPO / "scripts" / "cluster.py"), "down"], check=False,
                           cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip


def run_cluster(keep: bool) -> int:
    from tests.chart.helm import CHART, run_helm

    clock = Clock()
    say("Building the images: Debian packages + buildah, no Docker daemon (cached by content)")
    build_log = REPO / ".local" / "demo-images.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    with build_log.open("w") as errors:
        built = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "images.py"), "--no-smoke", "operator", "sidecar",
             "demo-app"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True,
        )  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"scripts/images failed:\n{build_log.read_text()[-3000:]}")
    for line in built.stdout.splitlines():
        print(f"  {line.split('  /')[0]}")
    clock.lap("images (scripts/images)")

    say("Starting the real single-node cluster (scripts/cluster: kubelet, containerd, runc, CNI bridge)")
    with node_cluster(clock) as plane, tempfile.TemporaryDirectory(prefix="modelroute-demo-") as tmp:
        kubectl = Kubectl(plane)  # type: ignore[arg-type]  # duck-typed like ControlPlane
        print(f"  {kubectl.run('get', 'nodes', '-o', 'wide').stdout.splitlines()[-1]}")
        env = plane.kubectl_env()

        def helm(*args: str) -> subprocess.CompletedProcess[str]:
            proc = run_helm(*args, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"helm {' '.join(args)}:\n{proc.stderr}")
            return proc

        models = {r: HostModel(r, free_port(), Path(tmp) / f"model-{r}.log") for r in REGIONS}
        installed = False
        try:
            say(f"helm install {RELEASE} charts/modelroute (2 operator pods, watching namespace {NAMESPACE})")
            for ns in (NAMESPACE, RELEASE_NS):
                if namespace_phase(kubectl, ns) == "Active":
                    raise RuntimeError(f"namespace {ns} exists (a kept demo?): `kubectl delete namespace"
                                       f" {ns}` or `scripts/cluster destroy` first")  # fmt: skip
                namespace_gone(kubectl, ns)
            kubectl.run("create", "namespace", NAMESPACE)
            kubectl.run("label", "namespace", NAMESPACE, "modelroute.dev/inject=enabled")
            t = time.monotonic()
            installed = True
            helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace",
                 "--set", f"watchNamespaces={{{NAMESPACE}}}", "--wait", "--timeout", "240s")  # fmt: skip
            print(f"  all operator pods Ready {time.monotonic() - t:.1f} s after helm install")
            print(kubectl.run("get", "pods", "-n", RELEASE_NS, "-o", "wide").stdout)
            clock.lap("helm install -> operator pods Ready")

            say("Fake model servers in three regions (host side of the node's link)")
            for region, model in models.items():
                model.start()
                print(f"  {region:<13} {model.url}")
            say("Applying examples/multi-region-eu-residency (replica URLs pointed at the fakes)")
            kubectl.apply(manifests_for(models), NAMESPACE)
            kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "modelroute", "--all",
                        "--timeout=90s")  # fmt: skip
            print(kubectl.run("get", "modelroute", "-n", NAMESPACE).stdout)
            clock.lap("models + example applied -> all Ready")

            say("Deploying the application (openai SDK); the webhook injects the router sidecar")
            kubectl.apply(app_deployment(), NAMESPACE)
            kubectl.run("rollout", "status", "-n", NAMESPACE, "deploy/chat", "--timeout=120s")
            pod = kubectl.json("get", "pods", "-n", NAMESPACE, "-l", "app=chat")["items"][0]
            spec = pod["spec"]
            containers = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
            print(f"  pod {pod['metadata']['name']}: containers {', '.join(containers)}")
            # Ready on a RoutingPolicy = live and run by every sidecar: safe to send traffic now.
            kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "routingpolicy/assistant",
                        "--timeout=60s")  # fmt: skip
            print(kubectl.run("get", "routingpolicy", "-n", NAMESPACE).stdout)
            clock.lap("app deployed -> sidecar injected, policy Ready")

            say("Live traffic from the app pod: every region healthy")
            pod_traffic(kubectl, 2)
            say("eu-west-1 goes down: EU personal data fails over to eu-central-1, never to the US")
            models["eu-west-1"].kill()
            pod_traffic(kubectl, 2)
            say("eu-central-1 goes down too: EU personal data fails closed; public traffic still flows")
            models["eu-central-1"].kill()
            pod_traffic(kubectl, 1)
            clock.lap("traffic, failover, fail-closed")

            say("Active health checks drain both EU regions; the sidecar gets the new config")
            wait_for(lambda: eu_unhealthy(kubectl) == 2, "health checks to drain both EU replicas", 60)
            print(kubectl.run("get", "modelendpoint", "-n", NAMESPACE).stdout)
            kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "routingpolicy/assistant",
                        "--timeout=60s")  # fmt: skip
            pod_traffic(kubectl, 1)
            say("The operator's Events")
            print(cluster_events(kubectl))
            clock.lap("drained -> new config on the sidecar, Events")
            if keep:
                say(f"Still running; KUBECONFIG={plane.kubeconfig}; press Ctrl-C to stop")
                while True:
                    time.sleep(3600)
        finally:
            for model in models.values():
                model.kill()
            if installed and not keep:
                say("Cleaning up: helm uninstall, the demo namespaces")
                kubectl.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
                run_helm("uninstall", RELEASE, "-n", RELEASE_NS, "--timeout", "120s", env=env)
                kubectl.run("delete", "namespace", RELEASE_NS, "--wait=false", check=False)
                # Nothing of the demo needs a graceful stop (the operator's Lease goes with its
                # namespace): without it the clean-up took 44 s of termination grace periods.
                for ns in (NAMESPACE, RELEASE_NS):
                    kubectl.run("delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force",
                                "--wait=false", check=False)  # fmt: skip
                # Gone before the cluster goes down: its state is kept, and a namespace left Terminating
                # would refuse the next run's release.
                for ns in (NAMESPACE, RELEASE_NS):
                    with contextlib.suppress(AssertionError):
                        namespace_gone(kubectl, ns)
                clock.lap("clean-up")
    clock.report()
    say("Done (real cluster)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="the local plane even when a cluster could run")
    where.add_argument("--cluster", action="store_true", help="the real cluster, or fail saying why not")
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = parser.parse_args()
    try:
        if args.local:
            return run_local(args.keep)
        why = cluster_unavailable()
        if why and args.cluster:
            print(f"[demo] the real-cluster demo cannot run here: {why}", file=sys.stderr)
            return 1
        if why:
            print(
                f"[demo] not on a real cluster: {why}.\n[demo] Running the local plane instead:"
                " kube-apiserver + etcd on loopback, the operator and a router sidecar as local processes"
                " (simulated pods).",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            started = time.monotonic()
            code = run_local(args.keep)
            say(f"Took {time.monotonic() - started:.0f} s (local plane)")
            return code
        return run_cluster(args.keep)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
