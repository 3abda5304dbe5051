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


def test_served_requests_are_remembered_for_half_to_all_of_the_ttl() -> None:
    clock = Clock()
    served = ServedRequests(capacity=100, ttl_seconds=60, clock=clock)
    served.remember("early", "main", "default", "ep", "acme")
    clock.now += 29
    served.remember("late", "main", "default", "ep", "acme")
    clock.now += 2  # past half the TTL: a new generation; both are still remembered
    served.remember("next", "main", "default", "ep", "acme")
    assert served.lookup("early") is not None and served.lookup("late") is not None
    clock.now += 31  # 62 s after `early`, 33 s after `late`: their generation is gone
    assert served.lookup("early") is None and served.lookup("late") is None
    entry = served.lookup("next")
    assert entry is not None and (entry.policy, entry.rule, entry.endpoint, entry.tenant) == (
        "main",
        "default",
        "ep",
        "acme",
    )
    clock.now += 1000  # idle far past the TTL: nothing is left
    assert served.lookup("next") is None and len(served) == 0


def test_served_requests_keep_at_least_half_and_at_most_all_of_the_capacity() -> None:
    served = ServedRequests(capacity=10, ttl_seconds=60, clock=Clock())
    for index in range(25):
        served.remember(f"r{index}", "main", "default", f"ep{index}", "")
        assert len(served) <= 10
    remembered = [i for i in range(25) if served.lookup(f"r{i}") is not None]
    assert remembered == list(range(25 - len(remembered), 25)) and len(remembered) >= 5


def test_a_reused_request_id_takes_the_latest_answer() -> None:
    clock = Clock()
    served = ServedRequests(capacity=10, ttl_seconds=60, clock=clock)
    served.remember("same", "main", "default", "old", "")
    clock.now += 40  # a new generation
    served.remember("same", "main", "cheap", "new", "")
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
