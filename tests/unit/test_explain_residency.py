"""`modelroute explain` on the shipped EU residency example: a client cannot talk its way out of residency.

Issue 12 reproduced the bug with this very command: a prompt holding an e-mail address, declared `public`,
was classified `public` (source `header`) and planned onto `us-east-1`. Here the CLI must report
`eu-personal`, note the laxer declaration, and plan no US replica; a tenant default behaves the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelroute_operator.runtime import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multi-region-eu-residency"


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], request: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    code = cli.main(["explain", "-q", "-f", str(EXAMPLE), "--request", str(path), "--region", "us-east-1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    return out


@pytest.mark.parametrize(
    ("headers", "body_extra", "content", "source"),
    [
        # the reproduction: PII in the prompt, declared public
        ({"x-modelroute-data-class": "public"}, {}, "write to jane.doe@example.com", "detector:email"),
        # a tenant whose default is eu-personal (in another case), declared public
        ({"x-modelroute-data-class": "public", "x-modelroute-tenant": "ACME-GmbH"}, {}, "hello", "tenant"),
        # PII only in the body's `user` field, or encoded
        ({"x-modelroute-data-class": "public"}, {"user": "jane.doe@example.com"}, "hello", "detector:email"),
        ({"x-modelroute-data-class": "public"}, {}, "write to jane.doe%40example.com", "detector:email"),
        ({"x-modelroute-data-class": "public"}, {}, "write to jane.doe\uff20example.com", "detector:email"),
    ],
)
def test_a_public_declaration_cannot_undo_eu_personal(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    headers: dict[str, str],
    body_extra: dict[str, Any],
    content: str,
    source: str,
) -> None:
    body = {"model": "assistant", "messages": [{"role": "user", "content": content}], **body_extra}
    out = explain(tmp_path, capsys, {"headers": headers, "body": body})
    assert (out["dataClass"], out["dataClassSource"]) == ("eu-personal", source)
    regions = {c["region"] for c in out["plan"] + out["escalation"]}
    assert regions and "us-east-1" not in regions, out["plan"]
    assert any("declared data class 'public' is laxer than 'eu-personal'" in n for n in out["notes"])


def test_a_public_prompt_may_still_go_to_the_us(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
    out = explain(tmp_path, capsys, {"headers": {"x-modelroute-data-class": "public"}, "body": body})
    assert (out["dataClass"], out["dataClassSource"]) == ("public", "header")
    assert out["plan"][0]["region"] == "us-east-1"
