"""Kopf keeps no diff-base for this operator: safe only while every handler it registers for resources
is an on.event handler (no on.create/update/resume, no daemons or timers), which this test holds."""

from __future__ import annotations

import kopf

from modelroute_operator.runtime import handlers


def test_only_event_handlers_are_registered_so_no_diff_base_is_needed() -> None:
    registry = kopf.get_default_registry()
    assert list(registry._changing.get_all_handlers()) == [], "a changing handler needs Kopf's diff-base"
    assert list(registry._spawning.get_all_handlers()) == [], "a daemon or timer needs Kopf's diff-base"
    assert len(list(registry._watching.get_all_handlers())) == 5  # three kinds, ConfigMaps, pods


def test_the_diff_base_is_empty_and_never_stored() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, handlers.NoDiffBase)
    body = kopf.Body({"metadata": {"name": "x", "namespace": "ns"}, "spec": {"big": ["x"] * 1000}})
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence())
    assert not patch
