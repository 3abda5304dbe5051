"""Loading manifests: multi-document YAML, directories, other kinds skipped, errors located in their file."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelroute_operator.logic.compiler import compile_namespace
from modelroute_operator.logic.manifests import ManifestError, load_manifests, manifest_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

ENDPOINT = """\
apiVersion: modelroute.dev/v1alpha1
kind: ModelEndpoint
metadata:
  name: {name}
spec:
  model: org/{name}
  replicas:
    - name: r1
      region: eu-west-1
      url: https://eu-west-1.llm.example.internal/v1
"""

POLICY = """\
apiVersion: modelroute.dev/v1alpha1
kind: RoutingPolicy
metadata:
  name: chat
spec:
  virtualModels: [chat]
  rules:
    - name: main
      targets:
        - endpoint: small
"""

SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: keys
stringData:
  key: dummy
"""


def write(path: Path, *documents: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(documents))
    return path


def test_multi_document_file_with_other_kinds(tmp_path: Path) -> None:
    file = write(tmp_path / "all.yaml", SECRET, ENDPOINT.format(name="small"), "", POLICY)
    loaded = load_manifests(file, namespace="team-a")
    assert loaded.errors == ()
    assert [(o.kind, o.metadata.name, o.metadata.namespace) for o in loaded.objects] == [
        ("ModelEndpoint", "small", "team-a"),
        ("RoutingPolicy", "chat", "team-a"),
    ]
    assert [(s.kind, s.name, s.source) for s in loaded.skipped] == [
        ("Secret", "keys", f"{file} (document 1)")
    ]
    result = compile_namespace(loaded.for_namespace("team-a"))
    assert result.errors == ()


def test_a_directory_is_read_in_name_order_and_not_recursively_unless_asked(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", ENDPOINT.format(name="b"))
    write(tmp_path / "a.yml", ENDPOINT.format(name="a"))
    write(tmp_path / "c.json", '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}')
    write(tmp_path / "README.md", "# not a manifest: {")
    write(tmp_path / "nested" / "d.yaml", ENDPOINT.format(name="d"))
    assert [p.name for p in manifest_files(tmp_path)] == ["a.yml", "b.yaml", "c.json"]
    flat = load_manifests(tmp_path)
    assert [o.metadata.name for o in flat.objects] == ["a", "b"]
    assert [s.kind for s in flat.skipped] == ["Namespace"]
    deep = load_manifests([tmp_path], recursive=True)
    assert [o.metadata.name for o in deep.objects] == ["a", "b", "d"]


def test_explicit_namespaces_are_kept_and_grouped(tmp_path: Path) -> None:
    other = ENDPOINT.format(name="small").replace("  name: small\n", "  name: small\n  namespace: prod\n")
    loaded = load_manifests(write(tmp_path / "m.yaml", ENDPOINT.format(name="small"), other), namespace="dev")
    assert loaded.errors == ()
    assert loaded.namespaces() == ("dev", "prod")
    assert [e.metadata.name for e in loaded.for_namespace("prod").endpoints] == ["small"]
    assert loaded.for_namespace("nowhere").endpoints == []


def test_a_list_document_is_unwrapped(tmp_path: Path) -> None:
    listed = "apiVersion: v1\nkind: List\nitems:\n" + "".join(
        "  - " + doc.replace("\n", "\n    ").rstrip() + "\n"
        for doc in (ENDPOINT.format(name="small"), POLICY)
    )
    loaded = load_manifests(write(tmp_path / "list.yaml", listed))
    assert loaded.errors == ()
    assert [o.kind for o in loaded.objects] == ["ModelEndpoint", "RoutingPolicy"]


def test_schema_errors_name_the_file_the_object_and_the_field(tmp_path: Path) -> None:
    broken = ENDPOINT.format(name="small").replace("https://eu-west-1", "eu-west-1")
    file = write(tmp_path / "m.yaml", SECRET, broken)
    loaded = load_manifests(file)
    assert loaded.objects == ()
    assert [str(e) for e in loaded.errors] == [
        f"{file} (document 2): ModelEndpoint/small spec.replicas[0].url: "
        "'eu-west-1.llm.example.internal/v1' is not an http(s) URL"
    ]


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        pytest.param("kind: [unclosed", "cannot be read as YAML", id="yaml-syntax"),
        pytest.param("- just\n- a list\n", "a document must be an object", id="not-an-object"),
        pytest.param(
            "apiVersion: modelroute.dev/v1alpha1\nkind: ModelEndPoint\nmetadata: {name: x}\n",
            "kind must be one of ModelEndpoint, RoutingPolicy, Canary",
            id="typo-in-our-kind",
        ),
        pytest.param(
            "apiVersion: modelroute.dev/v1beta1\nkind: Canary\nmetadata: {name: x}\n",
            "must be modelroute.dev/v1alpha1",
            id="unknown-version-of-ours",
        ),
    ],
)
def test_broken_documents_are_errors_not_skipped(tmp_path: Path, text: str, phrase: str) -> None:
    loaded = load_manifests(write(tmp_path / "m.yaml", text))
    assert (loaded.objects, loaded.skipped) == ((), ())
    assert len(loaded.errors) == 1
    assert phrase in loaded.errors[0].message
    assert loaded.errors[0].source == str(tmp_path / "m.yaml")


def test_an_object_defined_twice_is_an_error_and_the_first_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", ENDPOINT.format(name="small"))
    write(tmp_path / "b.yaml", ENDPOINT.format(name="small").replace("org/small", "org/other"))
    loaded = load_manifests(tmp_path)
    assert [o.spec.model for o in loaded.for_namespace("default").endpoints] == ["org/small"]
    assert [(e.kind, e.name, e.field, e.message) for e in loaded.errors] == [
        ("ModelEndpoint", "small", "metadata.name", f"also defined in {first}")
    ]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    loaded = load_manifests(tmp_path / "nope")
    assert [str(e) for e in loaded.errors] == [f"{tmp_path / 'nope'}: no such file or directory"]


def test_manifest_error_reads_well_without_an_object() -> None:
    assert str(ManifestError.in_file("m.yaml", "cannot be read as YAML")) == "m.yaml: cannot be read as YAML"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_example_loads_cleanly(name: str) -> None:
    loaded = load_manifests(EXAMPLES / name, namespace=name)
    assert loaded.errors == ()
    assert loaded.objects, "an example without our objects"
    assert {s.kind for s in loaded.skipped} <= {"Secret", "Namespace"}
    assert loaded.namespaces() == (name,)
