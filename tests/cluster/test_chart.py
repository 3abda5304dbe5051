"""The chart on a real cluster, as a platform engineer runs it: one scenario, in order.

`helm install` of the chart's defaults with the images built here → two operator pods Running, one
leader on the Lease, the PDB refusing a second eviction; the admission webhooks answer through their
Service; an application Deployment in a labelled namespace gets the router injected, runs Ready, and its
requests go through the sidecar to fake regional model servers; the injected sidecar's memory is read
from its cgroup; `kubectl rollout restart` of the operator in the middle of a canary neither repeats nor
skips a step; `helm upgrade` and `helm rollback`; deleting the namespace finishes (the operator lets go
of its finalizers); `helm uninstall` leaves no webhook behind.

The tests share the release and run in file order; each later one needs the earlier ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import CHART, run_helm
from tests.cluster.conftest import FIGURES, NodeCluster, Upstreams
from tests.kube_harness import Kubectl, wait_for
from tests.manifests import endpoint, policy, to_yaml, with_change

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

RELEASE, NS = "mr", "modelroute-system"
SELECTOR = "app.kubernetes.io/instance=mr,app.kubernetes.io/component=operator"
SUFFIX = os.getpid() % 100000
APP_NS = f"cluster-app-{SUFFIX}"
WEBHOOK_NS = f"cluster-webhook-{SUFFIX}"
AFTER_NS = f"cluster-after-{SUFFIX}"
"""Fresh namespaces per run: an object a previous run left behind would change what admission sees."""
APP_SCRIPT = (
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); signal.pause()"
)
"""The application container: a process that waits (the sidecar image has the Python it needs for exec)."""

CHAT = r"""
import json, sys, urllib.request
body = json.dumps({"model": "support-bot", "messages": [{"role": "user", "content": "hello"}]}).encode()
req = urllib.request.Request("http://127.0.0.1:15080/v1/chat/completions", data=body,
                             headers={"Content-Type": "application/json", "x-user-id": sys.argv[1]})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(json.dumps({"status": r.status, "endpoint": r.headers.get("x-modelroute-endpoint"),
                          "body": json.loads(r.read())}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode(errors="replace")[:300]}))
"""

LOAD = r"""
import json, sys, time, urllib.request, collections
seconds, rate = float(sys.argv[1]), float(sys.argv[2])
counts = collections.Counter()
deadline, i = time.monotonic() + seconds, 0
while time.monotonic() < deadline and i < int(seconds * rate):
    body = json.dumps({"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request("http://127.0.0.1:15080/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "x-user-id": f"u{i % 200}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            counts[f"{r.status} {r.headers.get('x-modelroute-endpoint')}"] += 1
    except urllib.error.HTTPError as e:
        counts[str(e.code)] += 1
    except OSError as e:
        counts[type(e).__name__] += 1
    i += 1
    time.sleep(1 / rate)
print(json.dumps(counts))
"""
"""Bounded load from inside the app pod: `seconds` long at most, `rate` requests a second."""


def helm(real_cluster: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_helm(*args, env=real_cluster.kubectl_env())
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc


def operator_pods(k: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k.json("get", "pods", "-n", NS, "-l", SELECTOR)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod.get("status", {}).get("phase") == "Running" and conditions.get("Ready") == "True"


def all_ready(k: Kubectl, want: int = 2) -> bool:
    pods = operator_pods(k)
    return len(pods) == want and all(ready(p) for p in pods)


def lease_holder(k: Kubectl) -> str:
    lease = k.get("lease", "mr-modelroute", NS)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def evict(k: Kubectl, pod: str) -> subprocess.CompletedProcess[str]:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": NS}}
    return k.run("create", "--raw", f"/api/v1/namespaces/{NS}/pods/{pod}/eviction", "-f", "-",
                 stdin=json.dumps(eviction), check=False)


def app_pod(k: Kubectl) -> dict[str, Any]:
    pods = [p for p in k.json("get", "pods", "-n", APP_NS, "-l", "app=chat")["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def in_app(k: Kubectl, script: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    proc = subprocess.run(
        [str(k.plane.kubectl), "exec", "-n", APP_NS, "deploy/chat", "-c", "app", "--",
         "python3", "-c", script, *args],
        capture_output=True, text=True, env=k.plane.kubectl_env(), timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------------------------------


def test_helm_install_gives_two_ready_operators_one_leader_and_a_pdb_that_holds(
    real_cluster: NodeCluster, ckubectl: Kubectl
) -> None:
    k = ckubectl
    if run_helm("status", RELEASE, "-n", NS, env=real_cluster.kubectl_env()).returncode == 0:
        helm(real_cluster, "uninstall", RELEASE, "-n", NS, "--wait")  # a previous run's leftover
    t0 = time.monotonic()
    helm(real_cluster, "install", RELEASE, str(CHART), "-n", NS, "--create-namespace", "--wait",
         "--timeout", "240s")
    FIGURES["helm_install_to_all_pods_ready_s"] = round(time.monotonic() - t0, 1)
    assert all_ready(k), [p["status"] for p in operator_pods(k)]
    names = {p["metadata"]["name"] for p in operator_pods(k)}
    holder = wait_for(lambda: lease_holder(k) in names and lease_holder(k), "a leader on the Lease", 60)
    standby = (names - {holder}).pop()
    wait_for(lambda: "is standby" in k.run("logs", "-n", NS, standby).stdout, "the standby's log line", 30)

    pdb = wait_for(lambda: (p := k.get("pdb", "mr-modelroute", NS)) and
                   p.get("status", {}).get("currentHealthy") == 2 and p, "the PDB's status", 60)
    assert pdb["status"]["disruptionsAllowed"] == 1
    # The PDB holds for real: the first eviction (the leader) goes through, a second one at once does not.
    first = evict(k, holder)
    assert first.returncode == 0, first.stderr
    second = evict(k, standby)
    assert second.returncode != 0 and "disruption budget" in second.stderr, second.stderr
    # Another pod takes the Lease over (the standby, or the evicted one's replacement when it is
    # quicker: the leader releases the Lease as it stops), and the Deployment is whole again.
    wait_for(lambda: lease_holder(k) != holder and lease_holder(k) in {p["metadata"]["name"] for p in
             operator_pods(k)}, "another pod taking over the Lease", 60)
    wait_for(lambda: all_ready(k), "two ready operator pods again", 120)


def test_the_admission_webhooks_answer_through_their_service(ckubectl: Kubectl) -> None:
    k = ckubectl
    configs = k.json("get", "validatingwebhookconfigurations,mutatingwebhookconfigurations")["items"]
    ours = [w for c in configs if c["metadata"]["name"].startswith("mr-") for w in c["webhooks"]]
    assert ours and all("service" in w["clientConfig"] and "url" not in w["clientConfig"] for w in ours)
    k.run("create", "namespace", WEBHOOK_NS, check=False)
    k.apply(to_yaml(endpoint("llama")), WEBHOOK_NS)
    broken = with_change(policy("support"), "spec.residency.detectors",
                         [{"kind": "pattern", "name": "badge", "pattern": r"(?<=B)-\d+", "dataClass": "eu-personal"}])
    proc = wait_for(lambda: (p := k.apply(to_yaml(broken), WEBHOOK_NS, check=False)).returncode and p,
                    "the webhook's refusal", 60)
    assert "pattern is not a valid RE2 regular expression" in proc.stderr, proc.stderr
    assert k.get("routingpolicy", "support", WEBHOOK_NS) is None


def test_an_app_in_a_labelled_namespace_gets_the_router_and_talks_through_it(
    ckubectl: Kubectl, host_upstreams: Upstreams
) -> None:
    k = ckubectl
    stable = host_upstreams("stable")
    k.run("create", "namespace", APP_NS)
    k.run("label", "namespace", APP_NS, "modelroute.dev/inject=enabled")
    llama = endpoint("llama-v1", regions={"eu-west-1": ["gdpr"]}, url_base=stable.url)
    k.apply(to_yaml(llama, policy("support", endpoint_name="llama-v1")), APP_NS)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat"},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"}, "annotations": {"modelroute.dev/region": "eu-west-1"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "app", "image": "modelroute/sidecar:0.1.0", "imagePullPolicy": "Never",
                        "command": ["python3", "-c", APP_SCRIPT],
                        "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }
    t0 = time.monotonic()
    k.apply(to_yaml(deployment), APP_NS)
    k.run("rollout", "status", "-n", APP_NS, "deploy/chat", "--timeout=120s")
    pod = app_pod(k)
    FIGURES["app_pod_with_sidecar_ready_s"] = round(time.monotonic() - t0, 1)
    assert ready(pod)
    router = [c for c in pod["spec"].get("initContainers", []) if c["name"] == "modelroute-router"]
    assert router and router[0].get("restartPolicy") == "Always", "a native sidecar was injected"
    statuses = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert statuses["modelroute-router"]["ready"] is True and statuses["modelroute-router"]["started"] is True

    # The operator pushes the namespace's config to the pod; then a request from inside the app goes
    # through the sidecar on localhost to the fake in eu-west-1.
    answer = wait_for(lambda: (a := in_app(k, CHAT, "u1"))["status"] == 200 and a, "a routed answer", 90)
    assert answer["endpoint"] == "llama-v1"
    assert answer["body"]["system_fingerprint"].endswith("stable") or "stable" in json.dumps(answer["body"])
    seen = stable.requests()
    assert any(r["model"] == "org/llama-v1" and r["path"] == "/v1/chat/completions" for r in seen), seen


def test_the_injected_sidecars_memory_comes_from_its_cgroup(ckubectl: Kubectl) -> None:
    pod = app_pod(ckubectl)
    status = next(s for s in pod["status"]["initContainerStatuses"] if s["name"] == "modelroute-router")
    container_id = status["containerID"].removeprefix("containerd://")
    qos = pod["status"]["qosClass"].lower()
    parent = Path("/sys/fs/cgroup/memory/kubepods")
    if qos != "guaranteed":
        parent = parent / qos
    cgroup = parent / f"pod{pod['metadata']['uid']}" / container_id
    usage = int((cgroup / "memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    limit = int((cgroup / "memory.limit_in_bytes").read_text())
    rss, cache = int(stat["total_rss"]), int(stat["total_cache"])
    FIGURES["sidecar_cgroup_memory_mib"] = {
        "usage": round(usage / 2**20, 1), "rss": round(rss / 2**20, 1), "cache": round(cache / 2**20, 1),
        "limit": round(limit / 2**20, 1),
    }
    assert 0 < rss < usage <= limit
    assert limit == 256 * 2**20, "the chart's sidecar memory limit reached the cgroup"


def canary_status(k: Kubectl) -> dict[str, Any]:
    return (k.get("modelcanary", "llama-v2", APP_NS) or {}).get("status", {})


def test_an_operator_rollout_restart_mid_canary_neither_repeats_nor_skips_a_step(
    real_cluster: NodeCluster, ckubectl: Kubectl, host_upstreams: Upstreams
) -> None:
    k = ckubectl
    candidate = host_upstreams("candidate")
    v2 = endpoint("llama-v2", regions={"eu-west-1": ["gdpr"]}, url_base=candidate.url)
    pol = with_change(policy("support", endpoint_name="llama-v1"), "spec.resilience", {"maxAttempts": 1})
    k.apply(to_yaml(v2, pol), APP_NS)
    canary = {
        "apiVersion": "modelroute.dev/v1alpha1", "kind": "Canary", "metadata": {"name": "llama-v2"},
        "spec": {
            "target": {"policy": "support", "rule": "default"}, "stable": "llama-v1", "candidate": "llama-v2",
            "steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
            "analysis": {"maxErrorRatePercent": 10, "minRequests": 5, "failureLimit": 1},
            "stickiness": {"header": "x-user-id"},
        },
    }
    load = subprocess.Popen(
        [str(k.plane.kubectl), "exec", "-n", APP_NS, "deploy/chat", "-c", "app", "--",
         "python3", "-c", LOAD, "150", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=k.plane.kubectl_env(),
    )
    try:
        k.apply(to_yaml(canary), APP_NS)
        wait_for(lambda: canary_status(k).get("phase") == "Progressing", "the canary progressing", 90)
        before = canary_status(k)
        t0 = time.monotonic()
        k.run("rollout", "restart", "-n", NS, "deployment/mr-modelroute")
        k.run("rollout", "status", "-n", NS, "deployment/mr-modelroute", "--timeout=180s")
        FIGURES["operator_rollout_restart_s"] = round(time.monotonic() - t0, 1)
        status = wait_for(lambda: (s := canary_status(k)).get("phase") == "Promoted" and s, "promotion", 180)
    finally:
        load.kill()
        load.wait()
    history = [(h["phase"], h["step"], h["weight"]) for h in status.get("history", [])]
    progressing = [(step, weight) for phase, step, weight in history if phase == "Progressing"]
    assert progressing == [(0, 20), (1, 50)], history
    assert status["history"][: len(before["history"])] == before["history"], "history was rewritten"
    assert status["lastAnalysis"]["verdict"] == "Pass"
    assert candidate.requests(), "the candidate served real traffic"


def test_helm_upgrade_and_rollback_keep_the_operators_and_the_traffic(
    real_cluster: NodeCluster, ckubectl: Kubectl
) -> None:
    k = ckubectl
    helm(real_cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values", "--set",
         "podAnnotations.modelroute\\.dev/test=upgraded", "--wait", "--timeout", "240s")
    wait_for(lambda: all_ready(k) and all(
        p["metadata"].get("annotations", {}).get("modelroute.dev/test") == "upgraded" for p in operator_pods(k)
    ), "the upgraded operators", 180)
    assert in_app(k, CHAT, "u2")["status"] == 200
    helm(real_cluster, "rollback", RELEASE, "1", "-n", NS, "--wait", "--timeout", "240s")
    wait_for(lambda: all_ready(k) and not any(
        "modelroute.dev/test" in p["metadata"].get("annotations", {}) for p in operator_pods(k)
    ), "the rolled-back operators", 180)
    history = json.loads(helm(real_cluster, "history", RELEASE, "-n", NS, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2, 3]
    assert history[-1]["status"] == "deployed" and "Rollback to 1" in history[-1]["description"]
    names = {p["metadata"]["name"] for p in operator_pods(k)}
    wait_for(lambda: lease_holder(k) in names, "a leader among the current pods", 60)
    assert in_app(k, CHAT, "u3")["status"] == 200


def test_deleting_the_namespace_finishes_and_leaves_nothing_of_it(ckubectl: Kubectl) -> None:
    k = ckubectl
    t0 = time.monotonic()
    k.run("delete", "namespace", APP_NS, "--wait=false")
    # Kopf's finalizers on the namespace's objects must be released by the operator, or this never ends.
    wait_for(lambda: k.run("get", "namespace", APP_NS, check=False).returncode != 0, "the namespace gone", 120)
    FIGURES["namespace_deletion_s"] = round(time.monotonic() - t0, 1)
    left = k.run("get", "modelroute", "-A", "-o", "json").stdout
    assert APP_NS not in left


def test_helm_uninstall_leaves_no_webhook_behind(real_cluster: NodeCluster, ckubectl: Kubectl) -> None:
    k = ckubectl
    helm(real_cluster, "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s")
    wait_for(lambda: not operator_pods(k), "the operator pods gone", 90)
    configs = k.json("get", "validatingwebhookconfigurations,mutatingwebhookconfigurations")["items"]
    assert not [c["metadata"]["name"] for c in configs if c["metadata"]["name"].startswith("mr-")]
    assert k.run("get", "crd", "modelendpoints.modelroute.dev", check=False).returncode == 0, "CRDs are kept"
    # A labelled namespace still admits pods (nothing points at a webhook that is gone).
    k.run("create", "namespace", AFTER_NS, check=False)
    k.run("label", "namespace", AFTER_NS, "modelroute.dev/inject=enabled", "--overwrite")
    k.run("run", "plain", "-n", AFTER_NS, "--image=modelroute/sidecar:0.1.0",
          "--image-pull-policy=Never", "--restart=Never", "--command", "--", "python3", "-c", "print(1)")
    pod = k.json("get", "pod", "plain", "-n", AFTER_NS)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["plain"]
    for ns in (AFTER_NS, WEBHOOK_NS):
        k.run("delete", "namespace", ns, "--wait=false", check=False)
