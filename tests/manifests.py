"""Small valid objects for tests, built as dicts so each test can break exactly one field."""

from __future__ import annotations

import copy
from typing import Any

import yaml


def endpoint(
    name: str = "llama",
    regions: dict[str, list[str]] | None = None,
    url_base: str = "https://{region}.llm.example.internal/v1",
) -> dict[str, Any]:
    """A ModelEndpoint with one replica per region; `regions` maps region → compliance labels."""
    regions = regions if regions is not None else {"eu-west-1": ["gdpr"], "us-east-1": []}
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": f"org/{name}",
            "tier": "balanced",
            "replicas": [
                {
                    "name": region,
                    "region": region,
                    "url": url_base.format(region=region),
                    "compliance": labels,
                }
                for region, labels in regions.items()
            ],
            # Probing is off unless a test turns it on: placeholder URLs would all turn unhealthy.
            "healthCheck": {"enabled": False, "interval": "10s", "timeout": "2s"},
        },
    }


def local_endpoint(
    name: str, url: str, region: str = "eu-west-1", compliance: list[str] | None = None
) -> dict[str, Any]:
    """A ModelEndpoint with one replica, named after its region, at a fake upstream's `url`; probing off."""
    replica: dict[str, Any] = {"name": region, "region": region, "url": url}
    if compliance is not None:
        replica["compliance"] = compliance
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": name},
        "spec": {"model": f"org/{name}", "healthCheck": {"enabled": False}, "replicas": [replica]},
    }


def policy(
    name: str = "support", endpoint_name: str = "llama", models: list[str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": {
            "virtualModels": models or ["support-bot"],
            "rules": [{"name": "default", "targets": [{"endpoint": endpoint_name, "weight": 100}]}],
            "residency": {
                "dataClasses": [
                    {"name": "eu-personal", "allowedRegions": ["eu-west-1"], "requiredCompliance": ["gdpr"]}
                ]
            },
            "locality": {"failoverOrder": ["eu-west-1", "us-east-1"]},
        },
    }


def canary(
    name: str = "llama-next",
    policy_name: str = "support",
    stable: str = "llama",
    candidate: str = "llama-next",
) -> dict[str, Any]:
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "target": {"policy": policy_name, "rule": "default"},
            "stable": stable,
            "candidate": candidate,
            "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}],
            "stickiness": {"header": "x-user-id"},
        },
    }


def with_change(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `obj` with the dotted `path` (list indexes as numbers) set to `value`; `...` deletes."""
    out = copy.deepcopy(obj)
    parts = path.split(".")
    node: Any = out
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value is ...:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def to_yaml(*objs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)
