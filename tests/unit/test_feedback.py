"""The sidecar's feedback memory (bounded, aged by an injected clock), the body check and the tally
that `/stats` serves and that sums over workers."""

from __future__ import annotations

import pytest

from modelroute_sidecar.feedback import FeedbackError, ServedRequests, parse_feedback
from modelroute_sidecar.stats import EndpointStats, merge_snapshots


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_served_requests_forget_after_the_ttl_and_past_the_capacity() -> None:
    clock = Clock()
    served = ServedRequests(capacity=3, ttl_seconds=60, clock=clock)
    for index in range(4):
        served.remember(f"r{index}", "main", "default", f"ep{index}", "acme")
        clock.now += 10
    assert served.lookup("r0") is None  # the oldest went when the fourth came
    assert [served.lookup(f"r{i}").endpoint for i in (1, 2, 3)] == ["ep1", "ep2", "ep3"]  # type: ignore[union-attr]
    clock.now = 100 + 10 + 60  # r1 was remembered at 110: it expires now, r2 (120) does not
    assert served.lookup("r1") is None
    assert served.lookup("r2") is not None
    assert len(served) == 2


def test_a_reused_request_id_takes_the_latest_answer_and_a_fresh_ttl() -> None:
    clock = Clock()
    served = ServedRequests(capacity=10, ttl_seconds=60, clock=clock)
    served.remember("same", "main", "default", "old", "")
    served.remember("other", "main", "default", "x", "")
    clock.now += 50
    served.remember("same", "main", "cheap", "new", "")
    clock.now += 20  # `other` expired; `same` was renewed at 150
    assert served.lookup("other") is None
    entry = served.lookup("same")
    assert entry is not None and (entry.rule, entry.endpoint) == ("cheap", "new")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "r", "score": 2}, "score"),
        ({"request_id": "r", "score": float("nan")}, "score"),
        ({"request_id": "", "score": 0.5}, "request_id"),
        ({"request_id": "r" * 129, "score": 0.5}, "request_id"),
        ({"request_id": "r", "score": 0.5, "label": ["a"]}, "label"),
        ({"request_id": "r", "score": 0.5, "extra": 1}, "extra"),
        ("not an object", None),
    ],
)
def test_bad_bodies_name_the_field(body: object, field: str | None) -> None:
    with pytest.raises(FeedbackError) as caught:
        parse_feedback(body)
    assert caught.value.field == field


def test_good_bodies() -> None:
    assert parse_feedback({"request_id": "r", "score": 1}).score == 1.0
    assert parse_feedback({"request_id": "r", "score": 0, "label": None}).label == ""
    assert parse_feedback({"request_id": "r", "score": 0.25, "label": "wrong"}).label == "wrong"


def test_feedback_figures_are_in_the_snapshot_and_sum_over_workers() -> None:
    one, two = EndpointStats(), EndpointStats()
    assert "feedback" not in one.snapshot(pod="p", config_version="v").to_json()  # absent until posted
    one.feedback.add("main", "default", "llama", 0.5)
    one.feedback.add("main", "default", "llama", 1.0)
    two.feedback.add("main", "default", "llama", 0.25)
    two.feedback.add("main", "cheap", "mini", 0.0)
    merged = merge_snapshots(
        [s.snapshot(pod="p", config_version="v").to_json() for s in (one, two)]
    ).to_json()
    assert merged["feedback"] == [
        {"policy": "main", "rule": "cheap", "endpoint": "mini", "count": 1, "scoreSum": 0.0},
        {"policy": "main", "rule": "default", "endpoint": "llama", "count": 3, "scoreSum": 1.75},
    ]
