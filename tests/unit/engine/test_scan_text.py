"""The detectors' text is every string of the body, however deep or far down it sits: a walk that stopped
early would let a client hide personal data from residency behind junk or nesting."""

from __future__ import annotations

from typing import Any

import pytest

from modelroute_sidecar.engine import extract_features
from modelroute_sidecar.engine.detectors import ContentScan
from modelroute_sidecar.engine.features import SCAN_MAX_STRINGS, TextScanLimitError

EMAIL = "jane.doe@example.com"


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"x": [leaf]}
    return leaf


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hello"}], **extra}


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("nested 200 deep in an extra field", chat(extra=nested(200, EMAIL))),
        ("after 5,000 junk strings", chat(junk=["filler"] * 5000, user=EMAIL)),
        ("as an object key", chat(metadata={EMAIL: "x"})),
    ],
)
def test_the_detectors_see_every_string_of_the_body(case: str, body: dict[str, Any]) -> None:
    features = extract_features(body, {}, "req-1", "chat")
    assert ContentScan(features.scan_text).finds("email"), case


def test_a_body_with_more_strings_than_the_scan_reads_is_refused_not_partly_scanned() -> None:
    body = chat(junk=["a"] * SCAN_MAX_STRINGS, user=EMAIL)
    with pytest.raises(TextScanLimitError, match="refused rather than partly classified"):
        extract_features(body, {}, "req-1", "chat")


def test_no_walk_when_no_detector_reads_it() -> None:
    features = extract_features(chat(user=EMAIL), {}, "req-1", "chat", scan=False)
    assert features.scan_text == ""
    assert features.prompt_text == "hello"
