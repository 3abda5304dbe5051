"""Config order: the sequence the operator assigns (pure compiler, previous sequence in) and the one rule
(`config_order`) every sidecar applies to pushes and files, legacy unsequenced configs included."""

from __future__ import annotations

import json
import time

import pytest
from tests.unit.test_compiler import endpoint, objects, policy, rule

from modelroute_contract import RouterConfig, config_order
from modelroute_operator.clients.kube import LiveConfig
from modelroute_operator.logic.compiler import NamespaceObjects, PreviousConfig, compile_namespace
from modelroute_operator.runtime.reconciler import previous_config


def config(sequence: int, namespace: str = "team-a") -> RouterConfig:
    return RouterConfig(namespace=namespace, sequence=sequence).seal()


@pytest.mark.parametrize(
    ("live", "incoming", "expected"),
    [
        (None, config(3), "newer"),
        (config(3), config(3), "same"),
        (config(3), config(4), "newer"),
        (config(4), config(3), "older"),
        (config(3), config(3, namespace="other"), "conflict"),  # one sequence, two contents
        (config(0), config(0, namespace="other"), "newer"),  # unsequenced: not ordered among themselves
        (config(0), config(1), "newer"),  # an operator upgrade: the first sequenced config wins
        (config(1), config(0), "older"),  # unsequenced is older than every sequenced config
        (config(1), config(0, namespace="other"), "older"),
    ],
)
def test_config_order(live: RouterConfig | None, incoming: RouterConfig, expected: str) -> None:
    assert config_order(live, incoming) == expected


def test_sequence_is_covered_by_the_hash() -> None:
    sealed = config(5)
    document = json.loads(sealed.to_json())
    assert document["sequence"] == 5
    with pytest.raises(ValueError, match="does not match content hash"):
        RouterConfig.from_json(json.dumps({**document, "sequence": 9}))  # a replayed config renumbered


def test_an_unsequenced_config_written_before_sequences_still_verifies() -> None:
    legacy = config(0)
    document = json.loads(legacy.to_json())
    del document["sequence"]  # what an operator without sequences stored and pushed
    loaded = RouterConfig.from_json(json.dumps(document))
    assert (loaded.sequence, loaded.version) == (0, legacy.version)


def test_a_negative_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="sequence"):
        RouterConfig(namespace="team-a", sequence=-1)


def namespace(model: str = "org/m") -> NamespaceObjects:
    return objects(endpoint("m", model=model), policy("p", rule("main", "m")))


def test_compiler_keeps_the_sequence_while_content_is_unchanged_and_counts_on_change() -> None:
    first = compile_namespace(namespace()).config
    assert first is not None and first.sequence == 1
    previous = PreviousConfig(first.sequence, first.version)
    again = compile_namespace(namespace(), previous).config
    assert again == first  # same inputs, same sequence, same version: the operator writes nothing
    changed = compile_namespace(namespace("org/other"), previous).config
    assert changed is not None and changed.sequence == 2 and changed.version != first.version
    back = compile_namespace(namespace(), PreviousConfig(changed.sequence, changed.version)).config
    assert back is not None and back.sequence == 3  # reverting the content is a new, later config
    assert back.version != first.version


def test_a_legacy_stored_config_keeps_its_version_until_the_content_changes() -> None:
    legacy = compile_namespace(namespace()).config
    assert legacy is not None
    unsequenced = legacy.model_copy(update={"sequence": 0}).seal()
    previous = PreviousConfig(0, unsequenced.version)
    same = compile_namespace(namespace(), previous).config
    assert same is not None and (same.sequence, same.version) == (0, unsequenced.version)  # no write
    changed = compile_namespace(namespace("org/other"), previous).config
    assert changed is not None and changed.sequence == 1


def test_without_a_stored_config_the_sequence_starts_above_the_clock() -> None:
    before = int(time.time() * 1000)
    floor = previous_config(None)
    assert floor.version == "" and floor.sequence >= before
    first = compile_namespace(namespace(), floor).config
    assert first is not None and first.sequence == floor.sequence + 1
    stored = LiveConfig(first.to_json(), first.version, {}, first.sequence)
    assert previous_config(stored) == PreviousConfig(first.sequence, first.version)
