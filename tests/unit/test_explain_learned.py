"""`modelroute explain` on policies with learned rules, offline: the builtin model from the wheel, a
ConfigMap's head given as a file (`--head CONFIGMAP=FILE`), and the decision's scorer, score and
semantic route with its similarity in the output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelroute_operator.runtime import cli
from modelroute_sidecar.embeddings import builtin_document, builtin_sha256

EXAMPLE = Path(__file__).parents[2] / "examples" / "learned-routing"
HARD = "Prove that the sum of two odd integers is even, step by step, then compute 17 * 23 - 4."


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: Path, *extra: str) -> tuple[int, Any]:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "learned", "messages": [{"role": "user", "content": HARD}]}))
    code = cli.main(["explain", "-q", "-f", str(where), "--request", str(request), *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_the_builtin_model_and_semantic_routes_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = explain(tmp_path, capsys, EXAMPLE)
    assert code == 0
    assert out["complexityScorer"] == "difficulty" and 0 <= out["complexity"] <= 100
    assert out["semanticRoute"] in ("code", "chitchat") and isinstance(out["semanticSimilarity"], float)


def test_a_configmap_head_is_given_as_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = tmp_path / "manifests"
    shutil.copytree(EXAMPLE, where)
    policy = where / "20-policy.yaml"
    head = builtin_document()
    policy.write_text(
        policy.read_text().replace(
            "    - name: difficulty\n      builtin: true\n",
            f"    - name: difficulty\n      version: {json.dumps(str(head['version']))}\n"
            f"      configMap: {{name: support-v3, key: head.json}}\n      sha256: {builtin_sha256()}\n",
        )
    )
    code, err = explain(tmp_path, capsys, where)
    assert code == 1 and "ConfigMap 'support-v3' does not exist" in err
    head_file = tmp_path / "head.json"
    head_file.write_text(json.dumps(head))
    code, out = explain(tmp_path, capsys, where, "--head", f"support-v3={head_file}")
    assert code == 0 and out["complexityScorer"] == "difficulty"
    _, builtin = explain(tmp_path, capsys, EXAMPLE)
    assert out["complexity"] == builtin["complexity"]  # the same head, the same score
