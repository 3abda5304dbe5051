"""Admission, without an API server: validation verdicts against a namespace, the sidecar injection patch
(applied with an independent RFC 6902 implementation), AdmissionReview parsing, and the webhook app's
answers to bad input and internal failures. The real API server's side is in tests/integration."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import dataclasses
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from modelroute_operator.clients.kube import RawObjects
from modelroute_operator.logic.compiler import NamespaceObjects, compile_namespace, parse_object
from modelroute_operator.logic.injection import (
    SECRETS_DIR,
    FleetStoreSettings,
    InjectionSettings,
    credential_secrets,
    injection_patch,
    mutate_pod,
    pointer,
    secret_volume_name,
    sidecar_container,
    wants_sidecar,
)
from modelroute_operator.logic.registration import webhook_configurations
from modelroute_operator.logic.resources import Canary, ModelEndpoint, RoutingPolicy
from modelroute_operator.logic.review import (
    AdmissionRequest,
    ReviewError,
    Verdict,
    parse_review,
    review_response,
)
from modelroute_operator.logic.validation import (
    Enforcement,
    ValidationSettings,
    is_missing_reference,
    validate,
)
from modelroute_operator.runtime.certificates import (
    generate_certificates,
    keep_certificate_fresh,
    tls_context,
)
from modelroute_operator.runtime.webhook_args import add_arguments, settings_from_args
from modelroute_operator.runtime.webhook_server import WebhookServer, WebhookSettings, create_app

NS = "team-a"
Body = dict[str, Any]


# ------------------------------------------------------------------------------------- builders


def endpoint(name: str, *regions: tuple[str, list[str]], secret: str | None = None) -> Body:
    regions = regions or (("eu-west-1", ["gdpr"]),)
    body: Body = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": f"org/{name}",
            "replicas": [
                {"name": r, "region": r, "url": f"https://{r}.llm.example.internal/v1", "compliance": c}
                for r, c in regions
            ],
        },
    }
    if secret:
        body["spec"]["credentials"] = {"name": secret, "key": "api-key"}
    return body


def policy(
    name: str = "p", *targets: str, models: list[str] | None = None, match_class: bool = False
) -> Body:
    rule: Body = {"name": "main", "targets": [{"endpoint": t} for t in targets or ("eu",)]}
    if match_class:
        rule["match"] = {"dataClasses": ["eu-personal"]}
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "virtualModels": models or ["auto"],
            "residency": {
                "dataClasses": [
                    {"name": "eu-personal", "allowedRegions": ["eu-west-1"], "requiredCompliance": ["gdpr"]}
                ]
            },
            "rules": [rule],
        },
    }


def canary(name: str = "c", policy_name: str = "p", stable: str = "eu", candidate: str = "eu-next") -> Body:
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "target": {"policy": policy_name, "rule": "main"},
            "stable": stable,
            "candidate": candidate,
            "steps": [{"weight": 10}, {"weight": 50}],
        },
    }


def base() -> list[Body]:
    """A valid namespace: endpoints `eu`, `eu-next`, `us`; policy `p` on `eu`; canary `c` to `eu-next`."""
    return [
        endpoint("eu"),
        endpoint("eu-next"),
        endpoint("us", ("us-east-1", [])),
        policy("p", "eu"),
        canary("c"),
    ]


def request(operation: str, obj: Body | None, old: Body | None = None) -> AdmissionRequest:
    subject = obj or old or {}
    return AdmissionRequest(
        uid="uid-1",
        kind=subject.get("kind", "Pod"),
        operation=operation,
        namespace=NS,
        name=subject.get("metadata", {}).get("name", ""),
        object=obj,
        old_object=old,
    )


def find(bodies: list[Body], kind: str, name: str) -> Body:
    return next(b for b in bodies if b["kind"] == kind and b["metadata"]["name"] == name)


def changed(body: Body, change: Callable[[Body], object]) -> Body:
    out = copy.deepcopy(body)
    change(out)
    return out


def test_the_base_namespace_is_valid() -> None:
    for body in base():
        verdict = validate(request("UPDATE", body, body), base())
        assert verdict == Verdict(allowed=True), body["metadata"]["name"]


# ------------------------------------------------------------------------------ create and update


REFUSED: list[tuple[str, Body, list[str]]] = [
    (
        "policy-targets-missing-endpoint",
        policy("q", "gpt-missing", models=["other"]),
        [
            "RoutingPolicy 'q' is invalid",
            "spec.rules[0].targets[0].endpoint: ModelEndpoint 'gpt-missing' does not exist in namespace 'team-a'",
        ],
    ),
    (
        "every-error-is-named",
        policy("q", "gone-1", "gone-2", models=["other"]),
        [
            "spec.rules[0].targets[0].endpoint: ModelEndpoint 'gone-1'",
            "spec.rules[0].targets[1].endpoint: ModelEndpoint 'gone-2'",
        ],
    ),
    (
        "residency-leaves-no-endpoint",
        policy("q", "us", models=["other"], match_class=True),
        [
            "spec.rules[0].match.dataClasses[0]: residency rules leave no possible endpoint for data class 'eu-personal'"
        ],
    ),
    (
        "canary-policy-missing",
        canary("d", policy_name="nope"),
        [
            "Canary 'd' is invalid",
            "spec.target.policy: RoutingPolicy 'nope' does not exist in namespace 'team-a'",
        ],
    ),
    (
        "canary-candidate-missing",
        canary("c", candidate="ghost"),
        ["spec.candidate: ModelEndpoint 'ghost' does not exist"],
    ),
    (
        "schema-error-named",
        changed(endpoint("eu"), lambda e: e["spec"]["replicas"][0].update(url="ftp://x")),
        ["ModelEndpoint 'eu' is invalid", "spec.replicas[0].url"],
    ),
    (
        "new-policy-takes-a-served-model",
        policy("a", "eu", models=["auto"]),  # sorts before `p`, where the compiler alone would pin the clash
        [
            "RoutingPolicy 'a' is invalid",
            "spec.virtualModels[0]: virtual model 'auto' is already served by RoutingPolicy 'p'",
        ],
    ),
    (
        "new-canary-takes-a-canaried-route",
        canary("a"),
        [
            "Canary 'a' is invalid",
            "spec.target.rule: rule 'main' of RoutingPolicy 'p' already has Canary 'c'",
        ],
    ),
]


@pytest.mark.parametrize(("case", "body", "expected"), REFUSED, ids=[c[0] for c in REFUSED])
def test_create_or_update_is_refused_naming_every_field(case: str, body: Body, expected: list[str]) -> None:
    existing = [
        b for b in base() if (b["kind"], b["metadata"]["name"]) == (body["kind"], body["metadata"]["name"])
    ]
    operation = "UPDATE" if existing else "CREATE"
    verdict = validate(request(operation, body, existing[0] if existing else None), base())
    assert not verdict.allowed
    assert (verdict.code, verdict.reason) == (422, "Invalid")
    for text in expected:
        assert text in verdict.message


def with_fleet(fleet: Body) -> Body:
    body = policy("p", "eu")
    body["spec"]["fleetLimits"] = fleet
    return body


BAD_FLEET = [
    ({"tenants": [{"daily": {"hardUsd": -5}}]}, "spec.fleetLimits.tenants[0].daily.hardUsd"),
    (
        {"tenants": [{"monthly": {"hardUsd": 10, "softUsd": -1}}]},
        "spec.fleetLimits.tenants[0].monthly.softUsd",
    ),
    ({"policy": {"daily": {"hardUsd": 10, "softUsd": 20}}}, "softUsd 20.0 is above hardUsd 10.0"),
    ({"failMode": "sometimes"}, "spec.fleetLimits.failMode"),
    ({"scope": "galaxy"}, "spec.fleetLimits.scope"),
    ({"tenants": [{"requestsPerMinute": 0}]}, "spec.fleetLimits.tenants[0].requestsPerMinute"),
    ({"tenants": [{"tenantTier": "gold"}, {"tenantTier": "gold"}]}, "spec.fleetLimits.tenants[1].tenantTier"),
]


@pytest.mark.parametrize(("fleet", "named"), BAD_FLEET)
def test_bad_fleet_limits_are_refused_naming_the_field(fleet: Body, named: str) -> None:
    verdict = validate(request("UPDATE", with_fleet(fleet), policy("p", "eu")), base())
    assert not verdict.allowed
    assert named in verdict.message, verdict.message


def test_good_fleet_limits_are_admitted() -> None:
    fleet = {
        "failMode": "closed",
        "scope": "cluster",
        "tenants": [{"requestsPerMinute": 100, "daily": {"hardUsd": 50, "softUsd": 40}}],
        "policy": {"monthly": {"hardUsd": 1000}},
    }
    assert validate(request("UPDATE", with_fleet(fleet), policy("p", "eu")), base()).allowed


def test_a_refused_missing_reference_says_how_to_order_the_apply() -> None:
    hint = "(apply the objects it refers to first)"
    missing = validate(request("CREATE", canary("d", policy_name="later")), base())
    assert missing.message.endswith(hint)
    wrong = validate(
        request("CREATE", changed(canary("d"), lambda c: c["spec"].update(candidate="eu"))), base()
    )
    assert not wrong.allowed and hint not in wrong.message


def test_valid_objects_are_allowed_without_warnings() -> None:
    for body in (
        endpoint("new"),
        policy("q", "eu", "us", models=["other"]),
        canary("c", candidate="eu-next"),
    ):
        assert validate(request("CREATE", body), base()) == Verdict(allowed=True)


def test_errors_of_other_objects_do_not_block_an_unrelated_change() -> None:
    broken = [*base(), canary("stale", policy_name="gone")]  # accepted while the webhook was down
    assert validate(request("CREATE", endpoint("new")), broken) == Verdict(allowed=True)
    eu = find(broken, "ModelEndpoint", "eu")
    relabelled = changed(eu, lambda e: e["metadata"].update(labels={"team": "a"}))
    assert validate(request("UPDATE", relabelled, eu), broken).allowed


def test_an_update_is_refused_only_for_errors_it_adds() -> None:
    stale = canary("stale", policy_name="gone")
    namespace = [*base(), stale]
    relabelled = changed(stale, lambda c: c["metadata"].update(labels={"x": "y"}))
    verdict = validate(request("UPDATE", relabelled, stale), namespace)
    assert verdict.allowed
    assert verdict.warnings == (
        "still invalid: spec.target.policy: RoutingPolicy 'gone' does not exist in namespace 'team-a'",
    )
    worse = changed(relabelled, lambda c: c["spec"].update(candidate="ghost"))
    verdict = validate(request("UPDATE", worse, stale), namespace)
    assert not verdict.allowed
    assert "spec.candidate: ModelEndpoint 'ghost' does not exist" in verdict.message
    assert "spec.target.policy" not in verdict.message


def test_the_owner_of_a_clashing_model_can_still_be_edited() -> None:
    namespace = [*base(), policy("z", "eu", models=["auto"])]  # clash created while the webhook was down
    p = find(namespace, "RoutingPolicy", "p")
    edited = changed(p, lambda b: b["spec"]["rules"][0]["targets"].append({"endpoint": "eu-next"}))
    assert validate(request("UPDATE", edited, p), namespace).allowed


def test_a_change_that_breaks_other_objects_is_allowed_with_a_warning() -> None:
    namespace = [*base(), policy("q", "eu", models=["other"], match_class=True)]
    eu = find(namespace, "ModelEndpoint", "eu")
    moved = changed(eu, lambda e: e["spec"]["replicas"][0].update(region="us-east-1", name="us-east-1"))
    verdict = validate(request("UPDATE", moved, eu), namespace)
    assert verdict.allowed
    assert verdict.warnings == (
        "this change breaks RoutingPolicy/q spec.rules[0].match.dataClasses[0]: residency rules leave no "
        "possible endpoint for data class 'eu-personal': no replica of eu runs in an allowed region "
        "(eu-west-1) and carries gdpr",
    )


def test_missing_references_can_be_demoted_to_warnings() -> None:
    warn = ValidationSettings(missing_references=Enforcement.WARN)
    verdict = validate(request("CREATE", canary("d", policy_name="later")), base(), warn)
    assert verdict.allowed
    assert verdict.warnings[0].startswith("spec.target.policy: RoutingPolicy 'later' does not exist")
    # Only references are demoted: a real mistake in the same object still refuses it.
    both = changed(canary("d", policy_name="later"), lambda c: c["spec"].update(candidate="eu"))
    verdict = validate(request("CREATE", both), base(), warn)
    assert not verdict.allowed
    assert "spec.candidate: candidate must differ from stable" in verdict.message
    assert "later" not in verdict.message


def test_a_replica_at_a_configured_sidecar_port_is_refused() -> None:
    looped = changed(
        find(base(), "ModelEndpoint", "eu"),
        lambda e: e["spec"]["replicas"][0].update(url="http://127.0.0.1:19901/v1"),
    )
    assert validate(request("UPDATE", looped, find(base(), "ModelEndpoint", "eu")), base()).allowed
    custom = ValidationSettings(sidecar_ports=(15080, 19901))
    verdict = validate(request("UPDATE", looped, find(base(), "ModelEndpoint", "eu")), base(), custom)
    assert not verdict.allowed
    assert "spec.replicas[0].url" in verdict.message and "own port 19901" in verdict.message


def test_a_data_class_no_target_satisfies_warns() -> None:
    verdict = validate(request("CREATE", policy("q", "us", models=["other"])), base())
    assert verdict.allowed
    assert verdict.warnings == (
        "spec.residency.dataClasses[0]: no replica of the endpoints this policy targets satisfies data "
        "class 'eu-personal'; its requests will always be refused",
    )


def test_a_shadow_that_no_data_class_replica_satisfies_warns() -> None:
    shadowed = policy("q", "eu", models=["other"])
    shadowed["spec"]["rules"][0]["shadow"] = {"endpoint": "us", "percent": 10}
    verdict = validate(request("CREATE", shadowed), base())
    assert verdict.allowed
    assert verdict.warnings == (
        "spec.rules[0].shadow: no replica of ModelEndpoint 'us' satisfies data class 'eu-personal'; its "
        "requests are never mirrored",
    )
    shadowed["spec"]["rules"][0]["shadow"]["endpoint"] = "eu-next"
    assert validate(request("CREATE", shadowed), base()).warnings == ()


def test_operations_other_than_changes_and_other_kinds_are_allowed() -> None:
    assert validate(request("CONNECT", None, endpoint("eu")), base()).allowed
    assert validate(request("CREATE", {"kind": "ConfigMap", "metadata": {"name": "x"}}), base()).allowed


# -------------------------------------------------------------------------------------------- delete


def test_deleting_a_referenced_endpoint_is_refused_naming_its_users() -> None:
    eu = find(base(), "ModelEndpoint", "eu")
    verdict = validate(request("DELETE", None, eu), base())
    assert not verdict.allowed
    assert (verdict.code, verdict.reason) == (409, "Conflict")
    assert verdict.message.startswith(
        "ModelEndpoint 'eu' is still used by RoutingPolicy/p; change or delete them first: "
    )
    assert (
        "RoutingPolicy/p spec.rules[0].targets[0].endpoint: ModelEndpoint 'eu' does not exist"
        in verdict.message
    )


def test_deleting_a_referenced_policy_is_refused() -> None:
    verdict = validate(request("DELETE", None, find(base(), "RoutingPolicy", "p")), base())
    assert not verdict.allowed
    assert "Canary/c spec.target.policy: RoutingPolicy 'p' does not exist" in verdict.message


def test_referenced_deletes_can_be_demoted_to_warnings() -> None:
    warn = ValidationSettings(referenced_deletes=Enforcement.WARN)
    verdict = validate(request("DELETE", None, find(base(), "ModelEndpoint", "eu-next")), base(), warn)
    assert verdict.allowed
    assert verdict.warnings[0].startswith(
        "ModelEndpoint 'eu-next' is still used by Canary/c: they are invalid until"
    )
    assert verdict.warnings[1].startswith("Canary/c spec.candidate: ModelEndpoint 'eu-next' does not exist")


def test_users_that_are_being_deleted_do_not_count() -> None:
    namespace = [b for b in base() if b["kind"] != "Canary"]
    p = find(namespace, "RoutingPolicy", "p")
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert validate(request("DELETE", None, find(namespace, "ModelEndpoint", "eu")), namespace).allowed


def test_deleting_an_unused_object_is_allowed() -> None:
    assert validate(request("DELETE", None, find(base(), "ModelEndpoint", "us")), base()) == Verdict(
        allowed=True
    )
    assert validate(request("DELETE", None, find(base(), "Canary", "c")), base()) == Verdict(allowed=True)


# ------------------------------------------------------------------------------ wording in step


@pytest.mark.parametrize(
    ("objects", "missing"),
    [
        ([policy("p", "gone")], True),
        (
            [
                endpoint("eu"),
                endpoint("n"),
                policy("p", "eu"),
                canary("c", policy_name="gone", candidate="n"),
            ],
            True,
        ),
        (
            [
                endpoint("eu"),
                endpoint("n"),
                policy("p", "eu"),
                changed(canary("c", candidate="n"), lambda c: c["spec"]["target"].update(rule="x")),
            ],
            True,
        ),
        ([endpoint("eu"), policy("p", "eu", "eu")], False),
    ],
    ids=["endpoint", "policy", "rule-of-policy", "not-a-reference"],
)
def test_missing_reference_errors_are_recognised(objects: list[Body], missing: bool) -> None:
    """`is_missing_reference` reads the compiler's wording; this fails when the wording drifts."""
    parsed = [parse_object(b) for b in objects]
    errors = compile_namespace(
        NamespaceObjects(
            NS,
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [o for o in parsed if isinstance(o, Canary)],
        )
    ).errors
    assert errors
    assert {is_missing_reference(e) for e in errors} == {missing}


# ------------------------------------------------------------------------------------- reviews


def review(**request_fields: Any) -> Body:
    req = {
        "uid": "u1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        **request_fields,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "expected an AdmissionReview"),
        ({"kind": "Pod"}, "expected an AdmissionReview"),
        ({**review(), "apiVersion": "admission.k8s.io/v1beta1"}, "only admission.k8s.io/v1"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "has no request"),
        (review(uid=""), "request.uid"),
        (review(kind="Pod"), "request.kind.kind"),
        (review(operation=None), "request.operation"),
        (review(object="pod"), "request.object must be an object"),
    ],
)
def test_malformed_reviews_are_rejected(body: Any, reason: str) -> None:
    with pytest.raises(ReviewError, match=reason):
        parse_review(body)


def test_a_review_is_parsed() -> None:
    parsed = parse_review(review(namespace="n", name="x", object={"a": 1}, dryRun=True))
    assert parsed == AdmissionRequest("u1", "Pod", "CREATE", "n", "x", {"a": 1}, None, dry_run=True)


def test_responses_carry_status_warnings_and_a_base64_patch() -> None:
    denied = review_response("u", Verdict(allowed=False, message="no", code=422, reason="Invalid"))
    assert denied["response"] == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 422, "message": "no", "reason": "Invalid"},
    }
    patch = [{"op": "add", "path": "/x", "value": 1}]
    allowed = review_response("u", Verdict(allowed=True, warnings=("w",), patch=patch))["response"]
    assert allowed["warnings"] == ["w"] and allowed["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(allowed["patch"])) == patch


# ------------------------------------------------------------------------------------ injection

SETTINGS = InjectionSettings(image="registry.example/modelroute/sidecar:1.0")


def pod(**spec: Any) -> Body:
    metadata = spec.pop("metadata", {"name": "app-1"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec},
    }


def injected(body: Body, settings: InjectionSettings = SETTINGS, secrets: tuple[str, ...] = ()) -> Body:
    result: Body = jsonpatch.apply_patch(body, injection_patch(body, settings, secrets))
    return result


def sidecar_of(body: Body) -> Body:
    containers = [*body["spec"].get("initContainers", []), *body["spec"]["containers"]]
    return next(c for c in containers if c["name"] == "modelroute-router")


def env_of(container: Body) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize(
    ("body", "namespace_injection", "expected"),
    [
        (pod(), True, True),
        (pod(), False, False),
        (pod(metadata={"annotations": {"modelroute.dev/inject": "true"}}), False, True),
        (pod(metadata={"labels": {"modelroute.dev/inject": "true"}}), False, True),
        (pod(metadata={"annotations": {"modelroute.dev/inject": "false"}}), True, False),
        (pod(metadata={"labels": {"modelroute.dev/inject": "disabled"}}), True, False),
        (pod(metadata={"labels": {"modelroute.dev/inject": "enabled"}}), False, True),
        (pod(initContainers=[{"name": "modelroute-router", "image": "x"}]), True, False),
        (pod(containers=[{"name": "app"}, {"name": "modelroute-router"}]), True, False),
        (pod(hostNetwork=True), True, False),
        (pod(hostNetwork=True, metadata={"annotations": {"modelroute.dev/inject": "true"}}), True, True),
    ],
    ids=[
        "ns-on",
        "ns-off",
        "pod-annotation",
        "pod-label",
        "opt-out",
        "opt-out-disabled",
        "opt-in-enabled",
        "injected-native",
        "injected-plain",
        "host-network",
        "host-network-asked",
    ],
)
def test_who_gets_a_sidecar(body: Body, namespace_injection: bool, expected: bool) -> None:
    assert wants_sidecar(body, namespace_injection) is expected


def test_a_bare_pod_gets_the_whole_sidecar() -> None:
    out = injected(pod())
    assert out["metadata"]["labels"] == {"modelroute.dev/router": "sidecar"}
    assert out["metadata"]["annotations"] == {"modelroute.dev/admin-port": "9901"}
    sidecar = out["spec"]["initContainers"][0]
    assert sidecar["name"] == "modelroute-router" and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == SETTINGS.image
    assert env_of(sidecar) == {
        "MODELROUTE_HOST": "127.0.0.1",
        "MODELROUTE_PORT": "15080",
        "MODELROUTE_ADMIN_HOST": "0.0.0.0",
        "MODELROUTE_ADMIN_PORT": "9901",
        "MODELROUTE_CONFIG_FILE": "/etc/modelroute/config",
        "MODELROUTE_ADMIN_TOKEN_FILE": "/etc/modelroute/admin/token",
        "MODELROUTE_SECRETS_DIR": "/etc/modelroute/secrets",
        "MODELROUTE_NAMESPACE": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        "MODELROUTE_POD_NAME": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        "MODELROUTE_REGION": {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['topology.kubernetes.io/region']"}
        },
        "MODELROUTE_WORKERS": "1",
        "MODELROUTE_LOG_LEVEL": "INFO",
        "MODELROUTE_LOG_FORMAT": "text",
    }
    assert [(p["name"], p["containerPort"]) for p in sidecar["ports"]] == [
        ("mr-proxy", 15080),
        ("mr-admin", 9901),
    ]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "mr-admin"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "mr-admin"}
    assert sidecar["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    security = sidecar["securityContext"]
    assert (
        security["runAsNonRoot"]
        and security["readOnlyRootFilesystem"]
        and not security["allowPrivilegeEscalation"]
    )
    assert security["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["modelroute-config"]["configMap"] == {
        "name": "modelroute-router-config",
        "items": [{"key": k, "path": k} for k in ("config.json", "config.v2.json", "config.v3.json")],
        "optional": True,
    }
    assert volumes["modelroute-admin"]["secret"]["secretName"] == "modelroute-sidecar-admin"
    assert volumes["modelroute-admin"]["secret"]["optional"] is True
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {
        "modelroute-config": "/etc/modelroute/config",
        "modelroute-admin": "/etc/modelroute/admin",
        "modelroute-tmp": "/tmp",
    }
    assert out["spec"]["containers"][0]["env"] == [
        {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:15080/v1"}
    ]


def test_the_fleet_store_reaches_the_sidecar_as_a_url_and_mounted_secret_files() -> None:
    store = FleetStoreSettings(
        url="rediss://redis.modelroute-system:6379/0",
        username="router",
        password_secret="modelroute-fleet-store",
        ca_secret="fleet-store-ca",
    )
    out = injected(pod(), settings=dataclasses.replace(SETTINGS, fleet_store=store))
    sidecar = sidecar_of(out)
    environment = env_of(sidecar)
    assert environment["MODELROUTE_FLEET_STORE_URL"] == "rediss://redis.modelroute-system:6379/0"
    assert environment["MODELROUTE_FLEET_STORE_USERNAME"] == "router"
    assert environment["MODELROUTE_FLEET_STORE_PASSWORD_FILE"] == "/etc/modelroute/fleet-store/password"
    assert environment["MODELROUTE_FLEET_STORE_CA_FILE"] == "/etc/modelroute/fleet-store-ca/ca.crt"
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["modelroute-fleet-store"]["secret"] == {
        "secretName": "modelroute-fleet-store",
        "items": [{"key": "password", "path": "password"}],
        "optional": True,
    }
    assert volumes["modelroute-fleet-store-ca"]["secret"]["secretName"] == "fleet-store-ca"
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts["modelroute-fleet-store"] == "/etc/modelroute/fleet-store"
    assert "fleet-test-password" not in json.dumps(out)  # only references: no secret value in a pod spec


def test_credentials_secrets_are_mounted_under_the_secrets_dir() -> None:
    out = injected(pod(), secrets=("openai-key", "azure.keys"))
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    for secret in ("openai-key", "azure.keys"):
        name = secret_volume_name(secret)
        assert volumes[name]["secret"] == {"secretName": secret, "optional": True}
        assert {
            "name": name,
            "mountPath": f"/etc/modelroute/secrets/{secret}",
            "readOnly": True,
        } in sidecar_of(out)["volumeMounts"]


def test_secret_volume_names_are_dns_labels() -> None:
    for secret in ("a", "with.dots", "x" * 253):
        name = secret_volume_name(secret)
        assert len(name) <= 63 and name.replace("-", "").isalnum() and name.islower()
    assert secret_volume_name("a") != secret_volume_name("b")


def test_credential_secrets_come_from_the_endpoints() -> None:
    endpoints = [
        endpoint("a", secret="k2"),
        endpoint("b"),
        endpoint("c", secret="k1"),
        endpoint("d", secret="k2"),
    ]
    assert credential_secrets(endpoints) == ("k1", "k2")


def test_tls_secrets_are_mounted_like_credentials() -> None:
    with_tls = endpoint("a", secret="k1")
    with_tls["spec"]["tls"] = {
        "caBundle": {"name": "llm-ca", "key": "ca.crt"},
        "clientCertificate": {"name": "mtls"},
    }
    only_ca = endpoint("b")
    only_ca["spec"]["tls"] = {"caBundle": {"name": "llm-ca", "key": "bundle.pem"}}
    secrets = credential_secrets([with_tls, only_ca, endpoint("c")])
    assert secrets == ("k1", "llm-ca", "mtls")
    mounts = {
        m["mountPath"] for m in sidecar_container(InjectionSettings(image="x"), secrets)["volumeMounts"]
    }
    assert {f"{SECRETS_DIR}/llm-ca", f"{SECRETS_DIR}/mtls"} <= mounts


def test_the_users_base_url_is_kept_and_every_other_app_container_gets_it() -> None:
    body = pod(
        containers=[
            {"name": "own", "image": "a", "env": [{"name": "OPENAI_BASE_URL", "value": "https://mine"}]},
            {"name": "other", "image": "b", "env": [{"name": "X", "value": "1"}]},
        ]
    )
    out = injected(body)
    assert out["spec"]["containers"][0]["env"] == [{"name": "OPENAI_BASE_URL", "value": "https://mine"}]
    assert out["spec"]["containers"][1]["env"] == [
        {"name": "X", "value": "1"},
        {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:15080/v1"},
    ]


def test_existing_volumes_labels_and_annotations_are_kept() -> None:
    body = pod(
        metadata={"name": "x", "labels": {"app.kubernetes.io/name": "web"}, "annotations": {"a/b": "c"}},
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    out = injected(body)
    assert out["metadata"]["labels"] == {"app.kubernetes.io/name": "web", "modelroute.dev/router": "sidecar"}
    assert out["metadata"]["annotations"] == {"a/b": "c", "modelroute.dev/admin-port": "9901"}
    assert [v["name"] for v in out["spec"]["volumes"]] == [
        "data",
        "modelroute-config",
        "modelroute-admin",
        "modelroute-tmp",
    ]


def test_the_sidecar_starts_before_existing_init_containers_which_are_left_alone() -> None:
    inits = [{"name": "migrate", "image": "m"}, {"name": "warm", "image": "w"}]
    out = injected(pod(initContainers=copy.deepcopy(inits)))
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["modelroute-router", "migrate", "warm"]
    assert out["spec"]["initContainers"][1:] == inits


def test_older_clusters_get_an_ordinary_container() -> None:
    out = injected(pod(), InjectionSettings(image="i", native_sidecar=False))
    assert "initContainers" not in out["spec"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "modelroute-router"]
    assert "restartPolicy" not in out["spec"]["containers"][1]
    assert "OPENAI_BASE_URL" not in env_of(out["spec"]["containers"][1])


@pytest.mark.parametrize(
    ("annotations", "settings_region", "expected"),
    [
        (
            {},
            "",
            {
                "fieldRef": {
                    "apiVersion": "v1",
                    "fieldPath": "metadata.labels['topology.kubernetes.io/region']",
                }
            },
        ),
        ({}, "eu-west-1", "eu-west-1"),
        ({"modelroute.dev/region": "us-east-1"}, "eu-west-1", "us-east-1"),
    ],
    ids=["from-node-label", "cluster-setting", "pod-annotation-wins"],
)
def test_region(annotations: dict[str, str], settings_region: str, expected: Any) -> None:
    out = injected(
        pod(metadata={"name": "x", "annotations": annotations}),
        InjectionSettings(image="i", region=settings_region),
    )
    assert env_of(sidecar_of(out))["MODELROUTE_REGION"] == expected


def test_ports_and_resources_follow_the_settings() -> None:
    settings = InjectionSettings(
        image="i", proxy_port=18080, admin_port=19901, resources={"requests": {"cpu": "1"}}
    )
    out = injected(pod(), settings)
    sidecar = sidecar_of(out)
    assert (
        env_of(sidecar)["MODELROUTE_PORT"] == "18080" and env_of(sidecar)["MODELROUTE_ADMIN_PORT"] == "19901"
    )
    assert out["metadata"]["annotations"]["modelroute.dev/admin-port"] == "19901"
    assert sidecar["resources"] == {"requests": {"cpu": "1"}}
    assert env_of(out["spec"]["containers"][0])["OPENAI_BASE_URL"] == "http://127.0.0.1:18080/v1"


def test_injection_is_idempotent() -> None:
    once = injected(pod())
    assert not wants_sidecar(once, True)
    verdict = mutate_pod(request("CREATE", once), SETTINGS, namespace_injection=True)
    assert verdict == Verdict(allowed=True)


def test_a_port_clash_is_a_warning() -> None:
    body = pod(containers=[{"name": "app", "image": "a", "ports": [{"containerPort": 9901}]}])
    verdict = mutate_pod(request("CREATE", body), SETTINGS, namespace_injection=True)
    assert verdict.allowed and verdict.patch
    assert verdict.warnings == (
        "container 'app' declares port 9901, which the modelroute sidecar's admin port uses: one of them will fail to listen",
    )


def test_only_pod_creates_are_mutated() -> None:
    body = pod()
    assert mutate_pod(request("UPDATE", body, body), SETTINGS, True) == Verdict(allowed=True)
    assert mutate_pod(request("CREATE", endpoint("x")), SETTINGS, True) == Verdict(allowed=True)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("metadata", "labels", "modelroute.dev/router"), "/metadata/labels/modelroute.dev~1router"),
        (("a~b",), "/a~0b"),
        (("~/",), "/~0~1"),
        (("spec", "containers", "0", "env", "-"), "/spec/containers/0/env/-"),
    ],
)
def test_json_pointers_are_escaped(parts: tuple[str, ...], expected: str) -> None:
    assert pointer(*parts) == expected


def test_label_keys_with_slashes_and_tildes_patch_the_right_key() -> None:
    body = pod(metadata={"name": "x", "labels": {"a~b/c": "1"}})
    out = injected(body)
    assert out["metadata"]["labels"] == {"a~b/c": "1", "modelroute.dev/router": "sidecar"}


# ------------------------------------------------------------------------------------ the server


class FakeReader:
    """Stands in for KubeApi: a namespace's objects, or an error."""

    def __init__(self, objects: list[Body] | None = None, error: Exception | None = None) -> None:
        self.objects = objects or []
        self.error = error
        self.calls: list[str] = []

    async def list_objects(self, namespace: str) -> RawObjects:
        self.calls.append(namespace)
        if self.error is not None:
            raise self.error
        by_kind = {
            k: [o for o in self.objects if o["kind"] == k]
            for k in ("ModelEndpoint", "RoutingPolicy", "Canary")
        }
        return RawObjects(by_kind["ModelEndpoint"], by_kind["RoutingPolicy"], by_kind["Canary"])


def server_settings(tmp: Path = Path("/nonexistent")) -> WebhookSettings:
    return WebhookSettings(cert_file=tmp / "tls.crt", key_file=tmp / "tls.key", injection=SETTINGS)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[FakeReader], Any]]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(reader: FakeReader) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(create_app(reader, server_settings())))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def as_review(req: AdmissionRequest, kind_group: str = "modelroute.dev") -> Body:
    return review(
        uid=req.uid,
        kind={"group": kind_group, "version": "v1alpha1", "kind": req.kind},
        operation=req.operation,
        namespace=req.namespace,
        name=req.name,
        object=req.object,
        oldObject=req.old_object,
    )


async def test_healthz(client_for: Any) -> None:
    client = await client_for(FakeReader())
    response = await client.get("/healthz")
    assert response.status == 200


@pytest.mark.parametrize("path", ["/validate", "/mutate-pods"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json", "body is not JSON"), (b'{"kind": "Pod"}', "expected an AdmissionReview")],
)
async def test_a_bad_review_gets_400_with_the_reason(
    client_for: Any, path: str, body: bytes, reason: str
) -> None:
    client = await client_for(FakeReader())
    response = await client.post(path, data=body)
    assert response.status == 400
    assert reason in (await response.json())["message"]


async def test_validation_answers_from_the_namespace(client_for: Any) -> None:
    reader = FakeReader(base())
    client = await client_for(reader)
    response = await client.post(
        "/validate", json=as_review(request("CREATE", policy("q", "gpt-missing", models=["o"])))
    )
    answer = (await response.json())["response"]
    assert response.status == 200 and reader.calls == [NS]
    assert answer["uid"] == "uid-1" and answer["allowed"] is False
    assert (
        "spec.rules[0].targets[0].endpoint: ModelEndpoint 'gpt-missing' does not exist"
        in answer["status"]["message"]
    )


async def test_validation_fails_closed_when_the_namespace_cannot_be_read(client_for: Any) -> None:
    client = await client_for(FakeReader(error=RuntimeError("API server away")))
    response = await client.post("/validate", json=as_review(request("CREATE", endpoint("x"))))
    answer = (await response.json())["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 503
    assert (
        answer["status"]["message"]
        == "the modelroute webhook could not check this ModelEndpoint: API server away"
    )


async def test_injection_reads_credentials_only_for_pods_that_get_a_sidecar(client_for: Any) -> None:
    reader = FakeReader([endpoint("a", secret="openai-key")])
    client = await client_for(reader)
    plain = await (await client.post("/mutate-pods", json=as_review(request("CREATE", pod()), ""))).json()
    assert plain["response"] == {"uid": "uid-1", "allowed": True} and reader.calls == []
    response = await client.post(
        "/mutate-pods/namespace-enabled", json=as_review(request("CREATE", pod()), "")
    )
    answer = (await response.json())["response"]
    assert reader.calls == [NS]
    out = jsonpatch.apply_patch(pod(), json.loads(base64.b64decode(answer["patch"])))
    assert "/etc/modelroute/secrets/openai-key" in [m["mountPath"] for m in sidecar_of(out)["volumeMounts"]]


async def test_injection_fails_closed_when_credentials_cannot_be_read(client_for: Any) -> None:
    client = await client_for(FakeReader(error=OSError("connection refused")))
    response = await client.post(
        "/mutate-pods/namespace-enabled", json=as_review(request("CREATE", pod()), "")
    )
    answer = (await response.json())["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 503
    assert (
        answer["status"]["message"]
        == "the modelroute webhook could not prepare this pod's sidecar: connection refused"
    )


# ---------------------------------------------------------------------------- TLS and certificates


def test_certificates_name_every_host(tmp_path: Path) -> None:
    certs = generate_certificates(tmp_path, ["127.0.0.1", "localhost", "webhook.ns.svc"])
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    assert base64.b64decode(certs.ca_bundle).startswith(b"-----BEGIN CERTIFICATE-----")
    cert = context.get_ca_certs()[0]
    assert cert["subject"] == ((("commonName", "modelroute-webhook-ca"),),)
    assert certs.key_file.stat().st_mode & 0o777 == 0o600


async def fetch_over_tls(port: int, ca_file: Path, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """Status of GET /healthz, verifying the server against `ca_file`, and the server's certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"https://{host}:{port}/healthz") as r,
    ):
        transport = r.connection.transport if r.connection else None
        peer = transport.get_extra_info("ssl_object").getpeercert(binary_form=True) if transport else b""
        return r.status, peer


async def test_the_server_serves_tls_with_its_certificate(tmp_path: Path) -> None:
    certs = generate_certificates(tmp_path, ["127.0.0.1", "localhost"])
    settings = WebhookSettings(certs.cert_file, certs.key_file, SETTINGS, host="127.0.0.1", port=0)
    server = WebhookServer(FakeReader(), settings)
    await server.start()
    try:
        assert server.port > 0
        for host in ("127.0.0.1", "localhost"):
            status, _ = await fetch_over_tls(server.port, certs.ca_file, host)
            assert status == 200
    finally:
        await server.stop()
        await server.stop()


async def test_a_renewed_certificate_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    first = generate_certificates(tmp_path / "a", ["127.0.0.1"])
    live = tmp_path / "live"
    live.mkdir()
    for name in ("tls.crt", "tls.key"):
        (live / name).write_bytes((tmp_path / "a" / name).read_bytes())
    context = tls_context(live / "tls.crt", live / "tls.key")
    runner = web.AppRunner(create_app(FakeReader(), server_settings()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    reloader = asyncio.get_running_loop().create_task(
        keep_certificate_fresh(context, live / "tls.crt", live / "tls.key", 0.05)
    )
    try:
        assert (await fetch_over_tls(port, first.ca_file))[0] == 200
        second = generate_certificates(tmp_path / "b", ["127.0.0.1"])
        for name in ("tls.crt", "tls.key"):
            (live / name).write_bytes((tmp_path / "b" / name).read_bytes())
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                if (await fetch_over_tls(port, second.ca_file))[0] == 200:
                    break
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            await asyncio.sleep(0.05)
    finally:
        reloader.cancel()
        await runner.cleanup()


# ------------------------------------------------------------------------------ settings, registration


def test_flags_become_settings() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(
        parser, environ={"MODELROUTE_SIDECAR_REGION": "eu-west-1", "MODELROUTE_SIDECAR_WORKERS": "2"}
    )
    assert settings_from_args(parser.parse_args([])) is None
    args = parser.parse_args(
        [
            "--webhook-port=8443",
            "--sidecar-image=img:2",
            '--sidecar-resources={"requests": {"cpu": 1}, "limits": {"memory": "1Gi"}}',
            "--sidecar-native=false",
            "--webhook-referenced-deletes=Warn",
        ]
    )
    settings = settings_from_args(args)
    assert settings is not None
    assert settings.port == 8443 and settings.cert_file == Path("/etc/modelroute/webhook/tls.crt")
    assert settings.key_file == Path("/etc/modelroute/webhook/tls.key")
    assert settings.validation == ValidationSettings(
        referenced_deletes=Enforcement.WARN, sidecar_ports=(9901, 15080)
    )
    injection = settings.injection
    assert (injection.image, injection.region, injection.native_sidecar, injection.workers) == (
        "img:2",
        "eu-west-1",
        False,
        2,
    )
    assert injection.resources == {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}


def test_upstream_proxy_variables_reach_the_injected_sidecar() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={"MODELROUTE_SIDECAR_HTTPS_PROXY": "http://proxy.corp:3128"})
    settings = settings_from_args(
        parser.parse_args(["--webhook-port=8443", "--sidecar-no-proxy=.svc,10.0.0.0/8"])
    )
    assert settings is not None
    env = {e["name"]: e.get("value") for e in sidecar_container(settings.injection)["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128" and env["NO_PROXY"] == ".svc,10.0.0.0/8"
    assert "HTTP_PROXY" not in env  # unset: not injected at all
    plain = {e["name"] for e in sidecar_container(InjectionSettings(image="x"))["env"]}
    assert not plain & {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"}


def test_the_charts_environment_configures_the_injector() -> None:
    """The names the Helm chart's operator Deployment sets."""
    environ = {
        "MODELROUTE_WEBHOOK_PORT": "9443",
        "MODELROUTE_WEBHOOK_CERT_DIR": "/certs",
        "MODELROUTE_SIDECAR_IMAGE": "modelroute/sidecar:0.1.0",
        "MODELROUTE_SIDECAR_IMAGE_PULL_POLICY": "Always",
        "MODELROUTE_SIDECAR_PORT": "15081",
        "MODELROUTE_SIDECAR_ADMIN_PORT": "9902",
        "MODELROUTE_SIDECAR_ADMIN_PORT_NAME": "modelroute-adm",
        "MODELROUTE_SIDECAR_WORKERS": "3",
        "MODELROUTE_SIDECAR_LOG_LEVEL": "DEBUG",
        "MODELROUTE_SIDECAR_REGION_LABEL": "example.com/region",
        "MODELROUTE_SIDECAR_RESOURCES": '{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"256Mi"}}',
    }
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ)
    settings = settings_from_args(parser.parse_args([]))
    assert settings is not None
    assert (settings.port, settings.cert_file, settings.key_file) == (
        9443,
        Path("/certs/tls.crt"),
        Path("/certs/tls.key"),
    )
    assert settings.injection == InjectionSettings(
        image="modelroute/sidecar:0.1.0",
        image_pull_policy="Always",
        proxy_port=15081,
        admin_port=9902,
        admin_port_name="modelroute-adm",
        workers=3,
        log_level="DEBUG",
        region_label="example.com/region",
    )
    # Admission refuses replica URLs at the ports the sidecars are given, as the reconciler does.
    assert settings.validation.sidecar_ports == (9902, 15081)
    sidecar = sidecar_of(injected(pod(), settings.injection))
    assert sidecar["livenessProbe"]["httpGet"]["port"] == "modelroute-adm"
    assert {"name": "modelroute-adm", "containerPort": 9902, "protocol": "TCP"} in sidecar["ports"]
    env = env_of(sidecar)
    assert (env["MODELROUTE_WORKERS"], env["MODELROUTE_LOG_LEVEL"]) == ("3", "DEBUG")
    assert env["MODELROUTE_REGION"]["fieldRef"]["fieldPath"] == "metadata.labels['example.com/region']"


@pytest.mark.parametrize("text", ["[]", '{"requests": "1"}', '{"cpu": "1"}', "nope"])
def test_bad_resources_are_refused(text: str) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, {})
    with pytest.raises(SystemExit):
        parser.parse_args(["--webhook-port=1", f"--sidecar-resources={text}"])


def test_configurations_scope_every_webhook() -> None:
    validating, mutating = webhook_configurations(
        "mr", "https://127.0.0.1:9443/", "Q0E=", scope={"test": "t1"}
    )
    [check] = validating["webhooks"]
    assert check["clientConfig"] == {"url": "https://127.0.0.1:9443/validate", "caBundle": "Q0E="}
    assert check["rules"][0]["resources"] == ["modelendpoints", "routingpolicies", "modelcanaries"]
    assert check["rules"][0]["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert check["failurePolicy"] == "Ignore" and check["sideEffects"] == "None"
    namespaced, per_pod = mutating["webhooks"]
    assert namespaced["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate-pods/namespace-enabled"
    assert namespaced["namespaceSelector"] == {
        "matchLabels": {"test": "t1", "modelroute.dev/inject": "enabled"}
    }
    assert namespaced["failurePolicy"] == "Fail"
    assert per_pod["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate-pods"
    assert per_pod["namespaceSelector"]["matchLabels"] == {"test": "t1"}
    assert per_pod["failurePolicy"] == "Ignore"
    assert len(webhook_configurations("mr", "https://x", "Q0E=", pod_opt_in=False)[1]["webhooks"]) == 1
