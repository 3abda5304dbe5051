"""The webhook configurations that register the admission server with the API server, pure: the
Validating- and MutatingWebhookConfiguration for a server at a URL with a CA bundle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelroute_operator.logic.injection import (
    INJECT_NAMESPACE_LABEL,
)
from modelroute_operator.logic.resources import GROUP, KINDS, VERSION

MUTATE_PODS_PATH = "/mutate-pods"
"""Injects into pods that ask for the sidecar (the API server allows no query in webhook URLs)."""
MUTATE_NAMESPACE_PODS_PATH = "/mutate-pods/namespace-enabled"
"""Injects into every pod that does not opt out: for the webhook entry selecting opted-in namespaces. The
plain path injects only pods that ask, so a call routed to the wrong path never injects a whole cluster."""


def webhook_configurations(
    name: str,
    base_url: str,
    ca_bundle: str,
    scope: Mapping[str, str] | None = None,
    validation_failure_policy: str = "Ignore",
    injection_failure_policy: str = "Fail",
    pod_opt_in: bool = True,
    timeout_seconds: int = 10,
    excluded_namespaces: Sequence[str] = ("kube-system", "kube-node-lease"),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Validating- and MutatingWebhookConfiguration registering a server reachable at `base_url`.

    `scope` adds namespace labels every webhook requires (tests use it to stay out of each other's way).
    Validation fails open by default: the operator checks every object again and keeps the last good
    config, so an unavailable webhook must not block every change. Injection into opted-in namespaces
    fails closed: a pod there without its router would bypass residency rules. The entry for pods that
    opt in on their own sees every namespace that has not chosen, so it always fails open; it skips
    `excluded_namespaces` (add the operator's own: its pods must not wait on a webhook that is not up yet).
    """
    labels = dict(scope or {})

    def client(path: str) -> dict[str, Any]:
        return {"url": f"{base_url.rstrip('/')}{path}", "caBundle": ca_bundle}

    def entry(webhook: str, path: str, rules: list[dict[str, Any]], failure: str) -> dict[str, Any]:
        return {
            "name": f"{webhook}.{GROUP}",
            "clientConfig": client(path),
            "rules": rules,
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout_seconds,
        }

    ours = [
        {
            "apiGroups": [GROUP],
            "apiVersions": [VERSION],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": [kind.plural for kind in KINDS],
            "scope": "Namespaced",
        }
    ]
    pods = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                **entry("validate", "/validate", ours, validation_failure_policy),
                "namespaceSelector": {"matchLabels": labels},
            }
        ],
    }
    namespace_entry = {
        **entry(
            "inject-namespace",
            MUTATE_NAMESPACE_PODS_PATH,
            pods,
            injection_failure_policy,
        ),
        "namespaceSelector": {"matchLabels": {**labels, INJECT_NAMESPACE_LABEL: "enabled"}},
        "reinvocationPolicy": "Never",
    }
    pod_entry = {
        **entry("inject-pod", MUTATE_PODS_PATH, pods, "Ignore"),
        "namespaceSelector": {
            "matchLabels": labels,
            "matchExpressions": [
                {"key": INJECT_NAMESPACE_LABEL, "operator": "NotIn", "values": ["enabled", "disabled"]},
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": list(excluded_namespaces),
                },
            ],
        },
        "reinvocationPolicy": "Never",
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [namespace_entry, *([pod_entry] if pod_opt_in else [])],
    }
    return validating, mutating
