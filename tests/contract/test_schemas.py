"""Schema versions and down-conversion: a config of schema 2 rendered for a schema-1 sidecar is a real
schema-1 document (the schema-1 contract, kept verbatim in `reference/schema1.py`, reads it and its hash
verifies) when the config uses nothing schema 1 would enforce more weakly, and otherwise a reason naming
the object and the field; never a weaker config."""

from __future__ import annotations

import itertools
import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from modelroute_contract import (
    ACCEPTED_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    Capabilities,
    CredentialRef,
    DataClassRule,
    Detector,
    EndpointConfig,
    PolicyConfig,
    Rendering,
    ReplicaConfig,
    Residency,
    RouterConfig,
    RuleConfig,
    SchemaGap,
    Target,
    TlsConfig,
)
from modelroute_contract.schemas import (
    STEPS,
    accepted_schemas,
    config_key,
    render_document,
    render_for,
    stored_documents,
)
from modelroute_sidecar.configstore import ConfigRejectedError, build_snapshot, config_document
from tests.contract.reference import schema1

FIXTURES = Path(__file__).parent / "fixtures"


def build(
    *,
    tls: bool = False,
    private: bool = False,
    stream_usage: bool = True,
    pattern: bool = False,
    detectors: bool = False,
    tenant_defaults: bool = False,
    default_class: bool = False,
    classes: bool = False,
    sequence: int = 7,
) -> RouterConfig:
    """A small config with the schema-2 features switched on or off."""
    endpoint = EndpointConfig(
        name="llm",
        model="org/llm",
        capabilities=Capabilities(stream_usage=stream_usage),
        tls=TlsConfig(ca_bundle=CredentialRef(secret="ca", key="ca.crt")) if tls else None,
        allow_private_targets=private,
        replicas=(
            ReplicaConfig(
                name="eu",
                region="eu-west-1",
                url="http://169.254.7.7/v1" if private else "https://eu.llm.test/v1",
                compliance=("gdpr",),
            ),
        ),
    )
    restricted = classes or detectors or tenant_defaults or default_class or pattern
    residency = Residency(
        data_classes=(DataClassRule(name="eu-personal", allowed_regions=("eu-west-1",)),)
        if restricted
        else (),
        precedence=("eu-personal",) if restricted else (),
        detectors=(
            *((Detector(kind="email", data_class="eu-personal"),) if detectors else ()),
            *(
                (Detector(kind="pattern", data_class="eu-personal", name="ssn", pattern=r"\d{3}-\d{2}"),)
                if pattern
                else ()
            ),
        ),
        tenant_defaults={"acme": "eu-personal"} if tenant_defaults else {},
        default_class="eu-personal" if default_class else "",
    )
    policy = PolicyConfig(
        name="eu-chat",
        virtual_models=("chat",),
        rules=(RuleConfig(name="all", targets=(Target(endpoint="llm", weight=100),)),),
        residency=residency,
    )
    return RouterConfig(namespace="team", sequence=sequence, endpoints=(endpoint,), policies=(policy,)).seal()


FEATURES = ("tls", "private", "stream_usage", "pattern", "detectors", "tenant_defaults", "default_class")


@pytest.mark.parametrize("switches", list(itertools.product((False, True), repeat=len(FEATURES))))
def test_rendered_for_schema_1_exactly_when_nothing_would_be_weaker(switches: tuple[bool, ...]) -> None:
    on = dict(zip(FEATURES, switches, strict=True))
    config = build(**{**on, "stream_usage": not on["stream_usage"]})
    result = config.render(1)
    # weaker under schema 1: TLS settings it ignores, a detector kind it lacks, several class signals
    weaker = on["tls"] or on["pattern"] or on["detectors"] or on["tenant_defaults"] or on["default_class"]
    if weaker:
        assert isinstance(result, SchemaGap)
        assert result.needs == 2
        text = result.message()
        assert text.startswith("reads schema 1; the config needs schema 2: ")
        assert ("ModelEndpoint llm uses tls (schema 2)" in text) == on["tls"]
        assert ("RoutingPolicy eu-chat uses a residency detector of kind pattern (schema 2)" in text) == on[
            "pattern"
        ]
        several = on["pattern"] or on["detectors"] or on["tenant_defaults"] or on["default_class"]
        assert ("RoutingPolicy eu-chat uses residency.precedence (schema 2)" in text) == several
        return
    assert isinstance(result, Rendering)
    # the schema-1 contract reads it: no field it lacks, and the hash it computes is the one we sent
    reference = schema1.RouterConfig.from_json(result.text)
    assert reference.version == result.version == json.loads(result.text)["version"]
    assert reference.model_dump(mode="json", by_alias=True) == json.loads(result.text)
    # today's sidecar reads it too, as a schema-1 config with the same identity; but not a private target
    # without the flag schema 1 cannot carry (it is sent the schema-2 document, which has the flag)
    if on["private"]:
        with pytest.raises(ConfigRejectedError, match="allowPrivateTargets"):
            build_snapshot(result.text, source="push", region="eu-west-1", namespace="team")
    else:
        snapshot = build_snapshot(result.text, source="push", region="eu-west-1", namespace="team")
        assert (snapshot.version, snapshot.config.schema_version) == (result.version, 1)
    # what is left out is exactly what a schema-1 sidecar has no use for
    assert "sequence" in result.dropped
    assert ("endpoints[0].allowPrivateTargets" in result.dropped) == on["private"]
    assert ("endpoints[0].capabilities.streamUsage" in result.dropped) == on["stream_usage"]


def test_a_policy_classified_by_the_declaration_alone_renders_for_schema_1() -> None:
    # one signal: first and strictest are the same class, so the precedence has nothing to order
    result = build(classes=True).render(1)
    assert isinstance(result, Rendering)
    assert "policies[0].residency.precedence" in result.dropped
    residency = json.loads(result.text)["policies"][0]["residency"]
    assert residency["dataClasses"][0]["allowedRegions"] == ["eu-west-1"]  # residency itself is kept


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("endpoint-tls", "ModelEndpoint balanced uses tls (schema 2): a schema-1 sidecar would connect"),
        ("pattern-detector", "RoutingPolicy auto uses a residency detector of kind pattern (schema 2)"),
        ("multi-region-eu-residency", "RoutingPolicy assistant uses residency.precedence (schema 2)"),
    ],
)
def test_v2_fixtures_that_schema_1_cannot_carry_say_why(fixture: str, reason: str) -> None:
    config = RouterConfig.from_json((FIXTURES / "v2" / f"{fixture}.json").read_text())
    result = config.render(1)
    assert isinstance(result, SchemaGap)
    assert reason in result.message()
    assert config_key(1) not in stored_documents(config.document())  # never stored for schema-1 pods


@pytest.mark.parametrize("path", sorted((FIXTURES / "v2").glob("*.json")), ids=lambda p: p.stem)
def test_v2_golden_configs_render_as_the_schema_1_operator_compiled_them(path: Path) -> None:
    # the examples the schema-1 operator compiled (fixtures/v1): today's compile, rendered for schema 1,
    # is the same document, hash included
    result = RouterConfig.from_json(path.read_text()).render(1)
    v1 = FIXTURES / "v1" / path.name
    if isinstance(result, Rendering) and v1.exists():
        assert json.loads(result.text) == json.loads(v1.read_text())
    elif v1.exists():
        assert path.stem == "multi-region-eu-residency"  # detectors and tenant defaults: see above


def test_the_bandit_fixture_renders_for_schema_2_routing_by_weight() -> None:
    # schema 3's bandit strategy is droppable: a schema-2 sidecar picks by the targets' weights, and every
    # filter it enforces (residency, health, budgets) is the same. The rendered config keeps the targets.
    config = RouterConfig.from_json((FIXTURES / "v3" / "bandit-strategy.json").read_text())
    assert config.policies[0].rules[0].strategy == "bandit"
    result = config.render(2)
    assert isinstance(result, Rendering), result
    assert '"strategy"' not in result.text and '"bandit"' not in result.text
    assert {"policies[0].rules[0].strategy", "policies[0].rules[0].bandit"} <= set(result.dropped)
    older = RouterConfig.from_json(result.text)
    assert older.schema_version == 2
    assert older.policies[0].rules[0].targets == config.policies[0].rules[0].targets
    assert older.policies[0].rules[0].strategy == "weighted" and older.policies[0].rules[0].bandit is None
    assert config_key(2) in stored_documents(config.document())


def test_the_configmap_holds_one_key_per_faithful_schema() -> None:
    plain = build()
    newest = [config_key(n) for n in range(2, SCHEMA_VERSION + 1)]
    assert sorted(stored_documents(plain.document())) == ["config.json", *newest]
    assert stored_documents(plain.document())[config_key(SCHEMA_VERSION)] == plain.to_json()
    assert sorted(stored_documents(build(tls=True).document())) == newest


@pytest.mark.parametrize(
    ("reads", "schema"),
    [((1,), 1), ((1, 2), 2), ((2,), 2), ((2, 9), 2), ((1, 2, SCHEMA_VERSION), SCHEMA_VERSION)],
)
def test_each_sidecar_gets_the_newest_schema_both_sides_speak(reads: tuple[int, ...], schema: int) -> None:
    result = build().render_for(reads)
    assert isinstance(result, Rendering)
    assert result.schema == schema
    assert json.loads(result.text)["schemaVersion"] == schema


def test_a_sidecar_that_reads_only_newer_schemas_is_told_so() -> None:
    newer = SCHEMA_VERSION + 1
    result = render_for(build().document(), (newer,))
    assert isinstance(result, SchemaGap)
    writes = ", ".join(map(str, ACCEPTED_SCHEMA_VERSIONS))
    assert result.message() == (
        f"reads schema {newer}; the config needs schema {SCHEMA_VERSION}: this operator writes schemas {writes}"
    )


def test_a_sidecar_that_does_not_say_reads_schema_1() -> None:
    assert accepted_schemas({"version": "sha256:ab"}) == (1,)  # a schema-1 sidecar's version answer
    assert accepted_schemas({"acceptedSchemaVersions": [2, 1]}) == (1, 2)
    assert accepted_schemas({"acceptedSchemaVersions": "2"}) == (1,)
    assert accepted_schemas({"acceptedSchemaVersions": [True]}) == (1,)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda d: d["endpoints"][0].update(tls={"serverName": "x"}),
            "endpoints[0].tls is not part of schema 1",
        ),
        (lambda d: d.update(sequence=4), "sequence is not part of schema 1"),
        (lambda d: d["policies"][0]["residency"].update(precedence=["eu-personal"]), "residency.precedence"),
        (
            lambda d: d["policies"][0]["residency"]["detectors"].append(
                {"kind": "pattern", "dataClass": "eu-personal", "name": "x", "pattern": "x"}
            ),
            "detectors[1].kind 'pattern' is not part of schema 1",
        ),
    ],
)
def test_a_schema_1_document_cannot_carry_what_schema_2_added(change: Any, problem: str) -> None:
    rendered = build(classes=True).render(1)
    assert isinstance(rendered, Rendering)
    document = json.loads(rendered.text)
    document["policies"][0]["residency"]["detectors"] = [{"kind": "email", "dataClass": "eu-personal"}]
    change(document)
    with pytest.raises(ConfigRejectedError, match="not part of schema 1") as refused:
        build_snapshot(json.dumps(document), source="push", region="eu-west-1")
    assert problem in refused.value.message


def test_unknown_fields_and_schemas_are_refused_not_skipped() -> None:
    document = json.loads(build().to_json())
    with pytest.raises(ConfigRejectedError, match="futureField") as refused:
        build_snapshot(json.dumps({**document, "futureField": 1}), source="push", region="eu-west-1")
    assert refused.value.status == 422
    newer, reads = SCHEMA_VERSION + 1, ", ".join(map(str, ACCEPTED_SCHEMA_VERSIONS))
    with pytest.raises(
        ConfigRejectedError, match=rf"schemaVersion {newer} is not supported .* reads schemas {reads}"
    ):
        build_snapshot(json.dumps({**document, "schemaVersion": newer}), source="push", region="eu-west-1")


def test_a_mounted_configmap_is_read_at_the_newest_schema_the_sidecar_reads(tmp_path: Path) -> None:
    config = build()
    (tmp_path / "config.json").write_text("{}")
    assert config_document(tmp_path) == tmp_path / "config.json"  # what an older operator wrote
    (tmp_path / "config.v2.json").write_text(config.to_json())
    assert config_document(tmp_path) == tmp_path / "config.v2.json"
    (tmp_path / "config.v9.json").write_text("{}")  # a schema this sidecar does not read
    assert config_document(tmp_path) == tmp_path / "config.v2.json"
    assert config_document(tmp_path / "config.json") == tmp_path / "config.json"  # a file is itself


# ------------------------------------------------------------------ every new field has its step


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, frozenset[Any]]]:
    """(path, Literal values) of every field of a contract model, recursively (`[]` for list items)."""
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        yield path, frozenset(_literals(info.annotation))
        for sub, many in _models(info.annotation):
            yield from _fields(sub, path + ("[]." if many else "."))


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _models(annotation: Any, many: bool = False) -> Iterator[tuple[type[BaseModel], bool]]:
    for t in _unwrap(annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            yield t, many
        elif typing.get_origin(t) in (tuple, list):
            for arg in typing.get_args(t):
                if arg is not Ellipsis:
                    yield from _models(arg, True)


def _literals(annotation: Any) -> Iterator[Any]:
    for t in _unwrap(annotation):
        if typing.get_origin(t) is typing.Literal:
            yield from typing.get_args(t)


def test_every_field_and_value_schema_1_lacks_is_declared_in_a_step() -> None:
    # A field (or Literal value) added to the contract without a schema step would reach schema-1
    # sidecars unannounced (they refuse it) or be dropped unexamined: bump the schema and add a step.
    today = dict(_fields(RouterConfig))
    before = dict(_fields(schema1.RouterConfig))
    added = {path for path in today if path not in before}
    # the fields inside a new field come with it (`tls.caBundle` is part of adding `tls`)
    added = {p for p in added if not any(p.startswith((f"{q}.", f"{q}[].")) for q in added)}
    declared = {a.path for step in STEPS for a in step.additions}
    assert added == declared
    new_values = {
        (path, value)
        for path, values in today.items()
        if path in before and path != "schemaVersion"
        for value in values - before[path]
    }
    assert new_values == {(v.path, v.value) for step in STEPS for v in step.values}


def test_shadow_traffic_is_left_out_for_a_schema_2_sidecar_and_loads_there() -> None:
    # A schema-2 sidecar does not mirror; the client's answers are the same, so the config still goes.
    text = (Path(__file__).parent / "fixtures" / "v3" / "shadow-traffic.json").read_text()
    document = json.loads(text)
    assert document["policies"][0]["rules"][0]["shadow"]["endpoint"] == "llama-next"
    rendering = render_document(document, 2)
    assert isinstance(rendering, Rendering), rendering
    assert rendering.dropped == ("policies[0].rules[0].shadow",)
    assert "shadow" not in rendering.text
    loaded = build_snapshot(rendering.text, source="file", region="eu-west-1", namespace="team-a")
    assert loaded.config.schema_version == 2 and loaded.version == rendering.version
    assert loaded.config.policies[0].rules[0].shadow is None
    # the schema-3 document itself keeps its shadow through the sidecar's loader
    native = build_snapshot(text, source="file", region="eu-west-1", namespace="team-a")
    shadow = native.config.policies[0].rules[0].shadow
    assert shadow is not None and (shadow.percent, shadow.max_concurrent) == (12.5, 16)
