"""Golden fixtures per schema version: every document an operator of any schema wrote must still load in
today's sidecar, through the sidecar's own loader (`configstore.build_snapshot`: schema, hash, RE2,
router), and keep its identity (the version it reports is the one it was sent).

The fixtures are frozen: `fixtures/SHA256SUMS` pins every file, so an edit shows up as a failing test
rather than as a silently rewritten promise. Add files for a new schema; never change old ones.
`v1/` are the golden configs the schema-1 operator (commit 7a48ff9) compiled from examples/; `v2/` are
today's golden configs plus one document per feature schema 2 added.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path

import pytest

from modelroute_contract import ACCEPTED_SCHEMA_VERSIONS, SCHEMA_VERSION, RouterConfig
from modelroute_contract.schemas import STEPS
from modelroute_sidecar.configstore import build_snapshot
from tests.contract.reference import schema1

FIXTURES = Path(__file__).parent / "fixtures"
SUMS = FIXTURES / "SHA256SUMS"
ALL = sorted(FIXTURES.glob("v*/*.json"))


def schema_of(path: Path) -> int:
    return int(path.parent.name.removeprefix("v"))


def test_every_accepted_schema_has_fixtures_and_every_fixture_an_accepted_schema() -> None:
    assert sorted({schema_of(p) for p in ALL}) == list(ACCEPTED_SCHEMA_VERSIONS)
    assert tuple(range(1, SCHEMA_VERSION + 1)) == ACCEPTED_SCHEMA_VERSIONS  # none is ever dropped


def test_the_versions_agree_across_the_contract() -> None:
    literal = typing.get_args(RouterConfig.model_fields["schema_version"].annotation)
    assert literal == ACCEPTED_SCHEMA_VERSIONS
    assert [s.version for s in STEPS] == list(range(2, SCHEMA_VERSION + 1))


def test_fixtures_are_unchanged() -> None:
    pinned = dict(line.split("  ")[::-1] for line in SUMS.read_text().splitlines() if line)
    actual = {str(p.relative_to(FIXTURES)): hashlib.sha256(p.read_bytes()).hexdigest() for p in ALL}
    assert actual == pinned, "fixtures are frozen: add new files (and their sums), never edit old ones"


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_todays_sidecar_loads_every_fixture(path: Path) -> None:
    text = path.read_text()
    document = json.loads(text)
    assert document["schemaVersion"] == schema_of(path)
    regions = sorted({r["region"] for e in document["endpoints"] for r in e["replicas"]} | {""})
    for region in regions:
        snapshot = build_snapshot(text, source="file", region=region, namespace=document["namespace"])
        assert snapshot.version == document["version"]  # what it reports is what it was sent
        assert snapshot.config.schema_version == schema_of(path)
    # and it writes the document back as it came (the parent hands this text on to its workers)
    assert json.loads(RouterConfig.from_json(text).to_json()) == document


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("v1/*.json")), ids=lambda p: p.stem
)
def test_v1_fixtures_are_schema_1_documents(path: Path) -> None:
    # the reference reader is the schema-1 contract itself: these are documents a schema-1 sidecar took
    loaded = schema1.RouterConfig.from_json(path.read_text())
    assert loaded.version == json.loads(path.read_text())["version"]
