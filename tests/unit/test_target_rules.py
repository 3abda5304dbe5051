"""Config that cannot be pointed inward: replica URLs, header matches, score ranges, token counts and names.

One rule each lives in `modelroute_contract`; these tests hold the rule itself (every spelling of
a metadata address), the compiler and admission webhook reporting it at the field at fault, and the
sidecar refusing a pushed config that breaks it even when no operator checked it first.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from tests.manifests import canary, endpoint, policy, with_change

import modelroute_contract as contract
from modelroute_operator.logic.compiler import (
    CompileError,
    NamespaceObjects,
    ObjectInvalid,
    compile_namespace,
    parse_object,
)
from modelroute_operator.logic.injection import InjectionSettings
from modelroute_operator.logic.resources import Canary, ModelEndpoint, RoutingPolicy
from modelroute_operator.logic.review import AdmissionRequest
from modelroute_operator.logic.validation import validate
from modelroute_sidecar.configstore import ConfigRejectedError, build_snapshot
from modelroute_sidecar.errors import ApiError
from modelroute_sidecar.settings import Settings
from modelroute_sidecar.views import parse_body

Body = dict[str, Any]

METADATA_SPELLINGS = [
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.169.254./",
    "http://169.254.1.1:8000/v1",
    "http://2852039166/",  # decimal
    "http://0xa9fea9fe/",  # hex
    "http://0xA9FEA9FE/",
    "http://0251.0376.0251.0376/",  # octal
    "http://169.254.43518/",  # short dotted: the last part fills the remaining bytes
    "http://0xa9.0xfe.0xa9fe/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::]/",  # 6to4
    "http://[fd00:ec2::254]/",  # AWS IMDS over IPv6
    "http://[FD00:EC2:0::254]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]:8000/",
    "https://metadata.google.internal/computeMetadata/v1",
    "HTTP://169.254.169.254/",
]
OWN_PORTS = [
    "http://127.0.0.1:9901/",  # admin and metrics
    "http://127.0.0.1:8080/v1",
    "http://127.0.0.1:15080/v1",  # the injected data port
    "http://localhost:15080/v1",
    "http://api.localhost:9901/",
    "http://[::1]:9901/",
    "http://0.0.0.0:15080/",
    "http://[::]:8080/",
    "http://2130706433:9901/",  # 127.0.0.1 in decimal
    "http://0x7f.1:9901/",
    "http://127.1:8080/",
    "http://[::ffff:127.0.0.1]:9901/",
]
ALLOWED = [
    "https://eu.llm.example.internal/v1",
    "http://10.0.0.7:8000/v1",  # private, but not link-local: an in-cluster model server
    "http://vllm.models.svc.cluster.local/v1",
    "http://127.0.0.1:8000/v1",  # a model server beside the app, on another port
    "http://localhost:11434/v1",
    "http://[2001:db8::1]/v1",
    "http://169.253.255.255/",
    "http://169.255.0.1/",
    "http://3232235777/",  # 192.168.1.1 in decimal: private, not link-local
]
ALWAYS_REFUSED = [
    ("http://user:secret@eu.example/v1", "user-info"),
    ("http://token@eu.example/v1", "user-info"),
    ("http://169.254.169.254\\@eu.example/", "user-info"),
    ("ftp://eu.example/v1", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("http:///v1", "no host"),
    ("http://eu.example:99999/", "not a valid URL"),
    ("http://08.1.1.1/", "ambiguous"),  # 08 is no octal number: browsers refuse the host
    ("http://1.2.3.4.5/", None),  # five parts: a host name as far as URL parsers go (no DNS match)
]


@pytest.mark.parametrize("url", METADATA_SPELLINGS)
def test_link_local_and_metadata_hosts_are_refused_in_every_spelling(url: str) -> None:
    problem = contract.replica_url_problem(url)
    assert problem is not None and "link-local or cloud-metadata" in problem
    assert "allowPrivateTargets" in problem
    assert contract.replica_url_problem(url, allow_private_targets=True) is None


@pytest.mark.parametrize("url", OWN_PORTS)
def test_loopback_urls_at_the_sidecars_own_ports_are_refused(url: str) -> None:
    problem = contract.replica_url_problem(url)
    assert problem is not None and "sidecar's own port" in problem
    assert contract.replica_url_problem(url, allow_private_targets=True) is None


@pytest.mark.parametrize("url", ALLOWED)
def test_ordinary_model_servers_are_allowed(url: str) -> None:
    assert contract.replica_url_problem(url) is None


@pytest.mark.parametrize(("url", "reason"), ALWAYS_REFUSED)
def test_user_info_and_non_http_urls_are_refused_even_with_private_targets(
    url: str, reason: str | None
) -> None:
    for allow in (False, True):
        problem = contract.replica_url_problem(url, allow_private_targets=allow)
        if reason is None:
            assert problem is None
        else:
            assert problem is not None and reason in problem, problem


def test_the_configured_ports_replace_the_defaults() -> None:
    assert contract.replica_url_problem("http://127.0.0.1:7000/", sidecar_ports=[7000]) is not None
    assert contract.replica_url_problem("http://127.0.0.1:9901/", sidecar_ports=[7000]) is None
    # A URL without a port means 80/443: a sidecar configured on 80 is protected too.
    assert contract.replica_url_problem("http://localhost/", sidecar_ports=[80]) is not None


def test_the_connect_time_check_judges_resolved_addresses() -> None:
    assert contract.connect_address_problem("169.254.169.254", 80) is not None
    assert contract.connect_address_problem("::ffff:169.254.169.254", 443) is not None
    assert contract.connect_address_problem("fd00:ec2::254", 80) is not None
    assert contract.connect_address_problem("127.0.0.1", 9901) is not None
    assert contract.connect_address_problem("127.0.0.1", 8000) is None
    assert contract.connect_address_problem("10.1.2.3", 443) is None
    assert contract.connect_address_problem("169.254.169.254", 80, allow_private_targets=True) is None


def test_the_sidecar_port_defaults_are_the_contracts() -> None:
    settings, injection = Settings(), InjectionSettings(image="x")
    assert (settings.port, settings.admin_port) == (contract.DEFAULT_DATA_PORT, contract.DEFAULT_ADMIN_PORT)
    assert (injection.proxy_port, injection.admin_port) == (
        contract.INJECTED_DATA_PORT,
        contract.DEFAULT_ADMIN_PORT,
    )


# ------------------------------------------------------------------------------------- the compiler


def _errors(*bodies: Body, sidecar_ports: tuple[int, ...] = contract.SIDECAR_PORTS) -> set[tuple[str, str]]:
    """(field, message) of every error, or ObjectInvalid's errors when a body does not parse."""
    try:
        parsed = [parse_object(b) for b in bodies]
    except ObjectInvalid as exc:
        return {(e.field, e.message) for e in exc.errors}
    result = compile_namespace(
        NamespaceObjects(
            "team-a",
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [o for o in parsed if isinstance(o, Canary)],
        ),
        sidecar_ports=sidecar_ports,
    )
    assert (result.config is None) == bool(result.errors)
    return {(e.field, e.message) for e in result.errors}


def _fields(errors: set[tuple[str, str]]) -> set[str]:
    return {field for field, _ in errors}


def test_the_base_objects_compile() -> None:
    assert _errors(endpoint(), policy(), endpoint("llama-next"), canary()) == set()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://apikey:sk-live-123@eu.example/v1", "user-info"),
        ("http://169.254.169.254/v1", "cloud-metadata"),
        ("http://0xa9fea9fe/v1", "cloud-metadata"),
        ("http://[::ffff:169.254.169.254]/v1", "cloud-metadata"),
        ("http://127.0.0.1:15080/v1", "own port 15080"),
    ],
)
def test_the_compiler_refuses_a_replica_url_at_its_field(url: str, reason: str) -> None:
    errors = _errors(with_change(endpoint(), "spec.replicas.1.url", url), policy())
    assert _fields(errors) == {"spec.replicas[1].url"}
    (message,) = [m for _, m in errors]
    assert reason in message
    assert "sk-live-123" not in message  # a password never reaches a status condition


def test_allow_private_targets_lets_metadata_and_own_ports_through_but_never_user_info() -> None:
    private = with_change(endpoint(), "spec.allowPrivateTargets", True)
    assert (
        _errors(with_change(private, "spec.replicas.0.url", "http://169.254.169.254/v1"), policy()) == set()
    )
    assert _errors(with_change(private, "spec.replicas.0.url", "http://127.0.0.1:9901/"), policy()) == set()
    errors = _errors(with_change(private, "spec.replicas.0.url", "http://u:p@eu.example/v1"), policy())
    assert _fields(errors) == {"spec.replicas[0].url"}


def test_the_operator_checks_the_ports_it_injects_as_well_as_the_defaults() -> None:
    body = with_change(endpoint(), "spec.replicas.0.url", "http://127.0.0.1:18000/v1")
    assert _errors(body, policy()) == set()
    assert _fields(_errors(body, policy(), sidecar_ports=(18000, 9902))) == {"spec.replicas[0].url"}


def test_compiled_configs_carry_allow_private_targets() -> None:
    private = with_change(endpoint(), "spec.allowPrivateTargets", True)
    parsed = [parse_object(b) for b in (private, policy())]
    result = compile_namespace(
        NamespaceObjects(
            "team-a",
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [],
        )
    )
    assert result.config is not None and result.config.endpoints[0].allow_private_targets is True


HOP_BY_HOP = sorted(contract.HOP_BY_HOP_HEADERS)


@pytest.mark.parametrize("header", [*HOP_BY_HOP, "Transfer-Encoding", "HOST"])
def test_header_matches_on_hop_by_hop_headers_are_refused(header: str) -> None:
    body = with_change(policy(), "spec.rules.0.match", {"headers": [{"name": header, "values": ["x"]}]})
    errors = _errors(endpoint(), body)
    assert _fields(errors) == {"spec.rules[0].match.headers[0].name"}
    assert any("hop-by-hop" in m for _, m in errors)


def test_residency_and_stickiness_headers_cannot_be_hop_by_hop_either() -> None:
    errors = _errors(endpoint(), with_change(policy(), "spec.residency.header", "Connection"))
    assert _fields(errors) == {"spec.residency.header"}
    bad_canary = with_change(canary(), "spec.stickiness", {"header": "upgrade"})
    errors = _errors(endpoint(), endpoint("llama-next"), policy(), bad_canary)
    assert _fields(errors) == {"spec.stickiness.header"}


@pytest.mark.parametrize(
    ("complexity", "field"),
    [({"max": 101}, "max"), ({"min": 150}, "min"), ({"min": -1}, "min"), ({"min": 0, "max": 1000}, "max")],
)
def test_complexity_ranges_outside_0_to_100_are_refused(complexity: Body, field: str) -> None:
    body = with_change(policy(), "spec.rules.0.match", {"complexity": complexity})
    assert _fields(_errors(endpoint(), body)) == {f"spec.rules[0].match.complexity.{field}"}


def test_complexity_bounds_0_and_100_are_accepted() -> None:
    body = with_change(policy(), "spec.rules.0.match", {"complexity": {"min": 0, "max": 100}})
    assert _errors(endpoint(), body) == set()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.capabilities", {"maxOutputTokens": 0}, "spec.capabilities.maxOutputTokens"),
        ("spec.capabilities", {"maxOutputTokens": -5}, "spec.capabilities.maxOutputTokens"),
        ("spec.capabilities", {"contextWindow": -1}, "spec.capabilities.contextWindow"),
        ("spec.rateLimit", {"requestsPerMinute": 0}, "spec.rateLimit.requestsPerMinute"),
    ],
)
def test_endpoint_token_counts_must_be_positive(path: str, value: Body, field: str) -> None:
    assert _fields(_errors(with_change(endpoint(), path, value), policy())) == {field}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.tenantLimits", [{"tokensPerMinute": 0}], "spec.tenantLimits[0].tokensPerMinute"),
        ("spec.tenantLimits", [{"tokensPerMinute": -100}], "spec.tenantLimits[0].tokensPerMinute"),
        ("spec.tenantLimits", [{"requestsPerMinute": 0}], "spec.tenantLimits[0].requestsPerMinute"),
        ("spec.rules.0.match", {"promptTokens": {"min": -1}}, "spec.rules[0].match.promptTokens.min"),
    ],
)
def test_policy_token_counts_must_not_be_negative(path: str, value: Any, field: str) -> None:
    assert _fields(_errors(endpoint(), with_change(policy(), path, value))) == {field}


@pytest.mark.parametrize("key", ["Tenant", "x y", "a" * 64, "1tier", "ten\nant"])
def test_metadata_keys_must_be_header_tokens(key: str) -> None:
    body = with_change(policy(), "spec.rules.0.match", {"metadata": {key: ["v"]}})
    assert _fields(_errors(endpoint(), body)) == {"spec.rules[0].match.metadata"}


@pytest.mark.parametrize("name", ["a" * 64, "llama.v2", "Llama"])
def test_object_names_must_fit_the_references_that_name_them(name: str) -> None:
    errors = _errors(with_change(endpoint(), "metadata.name", name), policy(endpoint_name="llama"))
    assert ("metadata.name", next(m for f, m in errors if f == "metadata.name")) in errors
    assert "DNS label of at most 63" in next(m for f, m in errors if f == "metadata.name")


def test_a_63_character_name_is_accepted() -> None:
    name = "a" * 63
    assert _errors(endpoint(name), policy(endpoint_name=name)) == set()


# ---------------------------------------------------------------------------------- the webhook


def test_the_validating_webhook_refuses_a_metadata_replica_naming_the_field() -> None:
    body = with_change(endpoint(), "spec.replicas.0.url", "http://[fd00:ec2::254]/latest")
    body["metadata"]["namespace"] = "team-a"
    request = AdmissionRequest("u1", "ModelEndpoint", "CREATE", "team-a", "llama", body, None)
    verdict = validate(request, [])
    assert not verdict.allowed and verdict.code == 422
    assert "spec.replicas[0].url" in verdict.message and "cloud-metadata" in verdict.message


def test_the_validating_webhook_refuses_user_info_without_echoing_it() -> None:
    body = with_change(endpoint(), "spec.replicas.0.url", "https://svc:hunter2@eu.example/v1")
    request = AdmissionRequest("u1", "ModelEndpoint", "CREATE", "team-a", "llama", body, None)
    verdict = validate(request, [])
    assert not verdict.allowed and "user-info" in verdict.message and "hunter2" not in verdict.message


# ------------------------------------------------------------------------------------ the sidecar


def _sealed_config() -> Body:
    parsed = [parse_object(b) for b in (endpoint(), policy())]
    result = compile_namespace(
        NamespaceObjects(
            "team-a",
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [],
        )
    )
    assert result.config is not None
    loaded: Body = json.loads(result.config.to_json())
    return loaded


def _resealed(config: Body) -> str:
    """The document with a correct hash, as a careless or hostile pusher holding the token would send."""
    body = copy.deepcopy(config)
    body.pop("version", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    body["version"] = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return json.dumps(body)


BAD_PUSHES = [
    pytest.param(
        ("endpoints", 0, "replicas", 0, "url"), "http://169.254.169.254/v1", "cloud-metadata", id="imds"
    ),
    pytest.param(
        ("endpoints", 0, "replicas", 0, "url"), "http://u:p@eu.example/v1", "user-info", id="user-info"
    ),
    pytest.param(("endpoints", 0, "replicas", 0, "url"), "http://127.0.0.1:9901/", "own port", id="own-port"),
    pytest.param(
        ("endpoints", 0, "capabilities", "maxOutputTokens"), 0, "greater than or equal", id="tokens"
    ),
    pytest.param(
        ("policies", 0, "rules", 0, "match", "headers"),
        [{"name": "transfer-encoding", "values": ["chunked"]}],
        "hop-by-hop",
        id="hop-by-hop",
    ),
    pytest.param(
        ("policies", 0, "rules", 0, "match", "complexity"), {"min": 0, "max": 101}, "0-100", id="cx"
    ),
    pytest.param(
        ("policies", 0, "rules", 0, "match", "promptTokens"), {"min": 9, "max": 1}, "exceeds", id="rng"
    ),
    pytest.param(
        ("policies", 0, "tenantLimits"), [{"tokensPerMinute": -1}], "greater than or equal", id="tpm"
    ),
    pytest.param(("policies", 0, "residency", "header"), "Host", "hop-by-hop", id="residency-header"),
    pytest.param(
        ("policies", 0, "residency", "detectors"),
        [{"kind": "pattern", "name": "badge", "pattern": "(B-[0-9]+", "dataClass": "eu-personal"}],
        "pattern is not a valid RE2 regular expression: missing )",
        id="invalid-pattern",
    ),
    pytest.param(
        ("policies", 0, "residency", "detectors"),
        [{"kind": "pattern", "name": "twin", "pattern": r"(x)\1", "dataClass": "eu-personal"}],
        "invalid escape sequence",
        id="backreference-pattern",
    ),
    pytest.param(
        ("policies", 0, "residency", "detectors"),
        [{"kind": "email", "pattern": "x", "dataClass": "eu-personal"}],
        "only allowed with kind 'pattern'",
        id="pattern-on-email",
    ),
]


@pytest.mark.parametrize(("path", "value", "reason"), BAD_PUSHES)
def test_the_sidecar_refuses_a_pushed_config_that_breaks_a_rule(
    path: tuple[Any, ...], value: Any, reason: str
) -> None:
    config = _sealed_config()
    build_snapshot(_resealed(config), source="push", region="eu-west-1")  # the base config is accepted
    node: Any = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigRejectedError) as caught:
        build_snapshot(_resealed(config), source="push", region="eu-west-1")
    assert caught.value.status == 422 and reason in str(caught.value), str(caught.value)


def test_the_sidecar_checks_its_own_configured_ports() -> None:
    config = _sealed_config()
    config["endpoints"][0]["replicas"][0]["url"] = "http://127.0.0.1:18080/v1"
    text = _resealed(config)
    build_snapshot(text, source="push", region="eu-west-1")  # not a default port
    with pytest.raises(ConfigRejectedError, match="own port 18080"):
        build_snapshot(text, source="push", region="eu-west-1", sidecar_ports=(18080, 19901))
    config["endpoints"][0]["allowPrivateTargets"] = True
    build_snapshot(_resealed(config), source="push", region="eu-west-1", sidecar_ports=(18080, 19901))


def test_compile_errors_name_object_and_field() -> None:
    # CompileError's string form is what status conditions and `modelroute validate` print.
    error = CompileError("ModelEndpoint", "llama", "spec.replicas[0].url", "must not carry user-info")
    assert str(error) == "ModelEndpoint/llama spec.replicas[0].url: must not carry user-info"


# --------------------------------------------------------------------------------- request bodies


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1, -4096, 1.5, "100", True])
def test_a_request_with_a_non_positive_token_count_is_refused_naming_the_field(
    field: str, value: Any
) -> None:
    body = {"model": "auto", "messages": [], field: value}
    with pytest.raises(ApiError) as caught:
        parse_body(json.dumps(body).encode(), "chat")
    assert caught.value.status == 400 and caught.value.param == field
    assert f"`{field}` must be a positive integer" in caught.value.message


def test_positive_and_null_token_counts_pass() -> None:
    for value in (1, 4096, None):
        body = {"model": "auto", "prompt": "hi", "max_tokens": value}
        assert parse_body(json.dumps(body).encode(), "completions")["max_tokens"] == value
