"""The local demo: a real control plane, the operator, fake regional models, a router sidecar, live traffic.

1. starts kube-apiserver + etcd on loopback and installs the CRDs;
2. starts fake OpenAI-compatible model servers for three regions;
3. runs the operator and applies `examples/multi-region-eu-residency` (replica URLs pointed at the fakes);
4. starts a router sidecar as a simulated pod in eu-west-1 and waits until the operator has synced it;
5. sends traffic with the official `openai` SDK and prints each decision: endpoint, region, rule, data
   class, latency;
6. takes eu-west-1 down and keeps sending: EU personal data fails over to eu-central-1 only, never to
   the US; then takes eu-central-1 down too: EU personal data fails closed with a 503 and the reason,
   while public traffic still flows to the US.

Run with `scripts/demo` (it bootstraps what is missing). `--keep` leaves everything running.
"""

from __future__ import annotations

import argparse
import base64
import copy
import sys
import tempfile
import time
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


def manifests_for(upstreams: dict[str, UpstreamProcess]) -> str:
    """The example's objects with every replica URL pointing at the fake server of its region."""
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


def run(keep: bool) -> int:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = parser.parse_args()
    try:
        return run(args.keep)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
