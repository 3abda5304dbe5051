"""Native providers end to end: the operator probes each native replica with the provider's own
authenticated read (a wrong key in the Secret turns it Unhealthy, as the real provider would), compiles
a cross-provider chain, and a real sidecar process serves it, failing over from a dead OpenAI upstream
to Azure OpenAI and Anthropic, to the OpenAI SDK and the Anthropic SDK alike."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest

from tests.e2e.conftest import Cluster
from tests.fakes.native import KEYS
from tests.kube_harness import REPO, free_port, wait_for
from tests.manifests import to_yaml

pytestmark = pytest.mark.e2e


def native_process(cluster: Cluster, provider: str, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (cluster.workdir / f"native-{name}.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.native",
            "--provider",
            provider,
            "--port",
            str(port),
            "--name",
            name,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, f"fake {provider}", 20)
    return proc, f"http://127.0.0.1:{port}"


def secret(name: str, key: str, value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


def health(cluster: Cluster, endpoint: str) -> str:
    body = cluster.kubectl.get("modelendpoint", endpoint, cluster.namespace) or {}
    replicas = body.get("status", {}).get("replicas", [])
    return str(replicas[0].get("health", "")) if replicas else ""


def test_native_providers_are_probed_compiled_and_served_across_providers(
    cluster: Cluster, tmp_path: Path
) -> None:
    openai_up = cluster.upstream("openai-1")
    azure, azure_url = native_process(cluster, "azure-openai", "az")
    claude, claude_url = native_process(cluster, "anthropic", "ant")
    check = {"interval": "1s", "timeout": "500ms", "healthyThreshold": 1, "unhealthyThreshold": 1}

    def endpoint(name: str, provider: str, url: str, secret_name: str, **extra: object) -> dict[str, object]:
        return {
            "apiVersion": "modelroute.dev/v1alpha1",
            "kind": "ModelEndpoint",
            "metadata": {"name": name},
            "spec": {
                "model": "m-" + name,
                "provider": provider,
                "healthCheck": check,
                "credentials": {"name": secret_name, "key": "apiKey"},
                "replicas": [{"name": "r1", "region": "eu-west-1", "url": url}],
                **extra,
            },
        }

    objects = [
        secret("azure-key", "apiKey", KEYS["azure-openai"]),
        secret("claude-key", "apiKey", "sk-ant-wrong"),  # fixed below: the probe must see it
        endpoint(
            "azure", "azure-openai", azure_url, "azure-key", providerSettings={"apiVersion": "2024-10-21"}
        ),
        endpoint("claude", "anthropic", claude_url, "claude-key"),
        {
            "apiVersion": "modelroute.dev/v1alpha1",
            "kind": "ModelEndpoint",
            "metadata": {"name": "gpt"},
            "spec": {
                "model": "gpt",
                "healthCheck": {**check, "enabled": False},
                "replicas": [{"name": "r1", "region": "eu-west-1", "url": openai_up.url}],
            },
        },
        {
            "apiVersion": "modelroute.dev/v1alpha1",
            "kind": "RoutingPolicy",
            "metadata": {"name": "chain"},
            "spec": {
                "virtualModels": ["assistant"],
                "resilience": {"maxAttempts": 3, "perTryTimeout": "2s", "deadline": "10s"},
                "rules": [
                    {"name": "default", "targets": [{"endpoint": "gpt"}], "fallbackTo": "azure"},
                    {"name": "azure", "targets": [{"endpoint": "azure"}], "fallbackTo": "claude"},
                    {"name": "claude", "targets": [{"endpoint": "claude"}]},
                ],
            },
        },
    ]
    try:
        cluster.kubectl.apply(to_yaml(*objects), cluster.namespace)
        wait_for(lambda: health(cluster, "azure") == "Healthy", "azure probed healthy with its api-key", 30)
        wait_for(
            lambda: health(cluster, "claude") == "Unhealthy", "claude probed unhealthy with a wrong key", 30
        )
        cluster.kubectl.apply(to_yaml(secret("claude-key", "apiKey", KEYS["anthropic"])), cluster.namespace)
        wait_for(lambda: health(cluster, "claude") == "Healthy", "claude healthy once the key is right", 30)
        wait_for(cluster.live_version, "the config")

        secrets = tmp_path / "secrets"
        for name, value in (("azure-key", KEYS["azure-openai"]), ("claude-key", KEYS["anthropic"])):
            (secrets / name).mkdir(parents=True)
            (secrets / name / "apiKey").write_text(value)
        sidecar = cluster.sidecar("app-0", "eu-west-1", extra=["--secrets-dir", str(secrets)])
        client = openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0)
        openai_up.kill()
        raw = client.chat.completions.with_raw_response.create(
            model="assistant", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content == "Hello from az"
        assert raw.headers["x-modelroute-provider"] == "azure-openai"
        azure.kill()
        azure.wait()
        stream = client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            == "Hello from ant [0] [1] [2]"
        )
        with anthropic.Anthropic(
            base_url=sidecar.base_url.removesuffix("/v1"), api_key="unused", max_retries=0
        ) as sdk:
            message = sdk.messages.create(
                model="assistant", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            assert message.content[0].type == "text" and message.content[0].text == "Hello from ant"
        wait_for(
            lambda: health(cluster, "azure") == "Unhealthy", "the dead azure replica probed unhealthy", 30
        )
    finally:
        for proc in (azure, claude):
            if proc.poll() is None:
                proc.kill()
