"""The sidecar's lock-free hot-path metric families expose exactly what prometheus_client's own
Counter and Histogram would for the same updates (the library is the oracle)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelroute_sidecar.metrics import LATENCY_BUCKETS_S, HotCounter, HotHistogram, Metrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but prometheus_client's `_created` timestamps, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


label_values = st.sampled_from(["chat", "embeddings"]), st.sampled_from(["ok", "timeout", "upstream-5xx"])
observations = st.lists(
    st.tuples(*label_values, st.floats(min_value=0, max_value=500, allow_nan=False)), max_size=60
)


@given(observations)
def test_hot_histogram_matches_the_library(observed: list[tuple[str, str, float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("x_seconds", "doc", ["route", "outcome"], LATENCY_BUCKETS_S)
    ours.register(hot)
    reference = Histogram(
        "x_seconds", "doc", ["route", "outcome"], buckets=LATENCY_BUCKETS_S, registry=theirs
    )
    for route, outcome, value in observed:
        hot.observe((route, outcome), value)
        reference.labels(route, outcome).observe(value)
    assert samples(ours) == samples(theirs)


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    registry = CollectorRegistry()
    hot = HotHistogram("x_seconds", "doc", ["route"], (0.001, 0.01))
    registry.register(hot)
    hot.observe(("chat",), 0.01)
    found = samples(registry)
    assert found[("x_seconds_bucket", (("le", "0.001"), ("route", "chat")))] == 0
    assert found[("x_seconds_bucket", (("le", "0.01"), ("route", "chat")))] == 1


@given(st.lists(st.tuples(*label_values, st.integers(min_value=0, max_value=10_000)), max_size=40))
def test_hot_counter_matches_the_library(added: list[tuple[str, str, int]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotCounter("x_total", "doc", ["route", "outcome"])
    ours.register(hot)
    reference = Counter("x_total", "doc", ["route", "outcome"], registry=theirs)
    for route, outcome, amount in added:
        hot.inc((route, outcome), amount)
        reference.labels(route, outcome).inc(amount)
    assert samples(ours) == samples(theirs)


def test_the_sidecar_families_keep_their_names() -> None:
    metrics = Metrics()
    metrics.count_request("chat", "llama", "eu-1", "eu-west", "ok", 0.004)
    metrics.observe_upstream("llama", "eu-1", "eu-west", "ok", 0.003)
    metrics.count_tokens("llama", 12, 5, 0.5)
    text = metrics.render().decode()
    for line in (
        'modelroute_requests_total{endpoint="llama",outcome="ok",region="eu-west",replica="eu-1",route="chat"} 1.0',
        'modelroute_request_duration_seconds_bucket{le="0.005",outcome="ok",route="chat"} 1.0',
        'modelroute_upstream_duration_seconds_count{endpoint="llama",outcome="ok",region="eu-west",replica="eu-1"} 1.0',
        'modelroute_tokens_total{direction="out",endpoint="llama"} 5.0',
        'modelroute_estimated_cost_usd_total{endpoint="llama"} 0.5',
    ):
        assert line in text
    assert "# TYPE modelroute_requests_total counter" in text
