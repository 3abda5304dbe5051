"""The sidecar's own metric families write exactly what prometheus_client writes for the same updates
(the library is the oracle, minus its `_created` samples), and a pod's workers merge into one
exposition the library reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelroute_sidecar.metrics import (
    LATENCY_BUCKETS_S,
    Family,
    HotCounter,
    HotHistogram,
    Metrics,
    go_float,
    merge_expositions,
)


def ours(family: Family) -> list[str]:
    lines: list[str] = []
    family.expose(lines)
    return lines


def theirs(registry: CollectorRegistry) -> list[str]:
    """The library's text, without its `_created` timestamps (which the sidecar does not write)."""

    def name(line: str) -> str:
        return line.split(" ")[2] if line.startswith("#") else line.split("{")[0].split(" ")[0]

    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not name(line).endswith("_created")
    ]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


label_values = (
    st.sampled_from(["chat", "embeddings"]),
    st.sampled_from(["ok", "timeout", 'odd "quoted"\\ \n']),
)
observations = st.lists(
    st.tuples(*label_values, st.floats(min_value=0, max_value=500, allow_nan=False)), max_size=60
)


@given(observations)
def test_hot_histogram_matches_the_library(observed: list[tuple[str, str, float]]) -> None:
    registry = CollectorRegistry()
    hot = HotHistogram("x_seconds", "doc", ["route", "outcome"], LATENCY_BUCKETS_S)
    reference = Histogram(
        "x_seconds", "doc", ["route", "outcome"], buckets=LATENCY_BUCKETS_S, registry=registry
    )
    for route, outcome, value in observed:
        hot.observe((route, outcome), value)
        reference.labels(route, outcome).observe(value)
    assert ours(hot) == theirs(registry)


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    hot = HotHistogram("x_seconds", "doc", ["route"], (0.001, 0.01))
    hot.observe(("chat",), 0.01)
    found = samples("\n".join(ours(hot)) + "\n")
    assert found[("x_seconds_bucket", (("le", "0.001"), ("route", "chat")))] == 0
    assert found[("x_seconds_bucket", (("le", "0.01"), ("route", "chat")))] == 1


@given(st.lists(st.tuples(*label_values, st.integers(min_value=0, max_value=10**12)), max_size=40))
def test_hot_counter_matches_the_library(added: list[tuple[str, str, int]]) -> None:
    registry = CollectorRegistry()
    hot = HotCounter("x_total", "doc", ["route", "outcome"])
    reference = Counter("x_total", "doc", ["route", "outcome"], registry=registry)
    for route, outcome, amount in added:
        hot.labels(route, outcome).inc(amount)
        reference.labels(route, outcome).inc(amount)
    assert ours(hot) == theirs(registry)


@given(st.floats(allow_nan=False) | st.sampled_from([float("inf"), float("-inf"), 1e22, 123456789.0]))
def test_values_are_written_as_go_writes_them(value: float) -> None:
    registry = CollectorRegistry()
    Gauge("g", "doc", registry=registry).set(value)
    assert f"g {go_float(value)}" in theirs(registry)


def test_the_sidecar_families_keep_their_names() -> None:
    metrics = Metrics()
    metrics.count_request("chat", "llama", "eu-1", "eu-west", "ok", 0.004)
    metrics.observe_upstream("llama", "eu-1", "eu-west", "ok", 0.003)
    metrics.count_tokens("llama", 12, 5, 0.5)
    metrics.retries.labels("llama", "connect").inc()
    metrics.set_config_version("sha256:1", 2)
    metrics.set_config_version("sha256:2", 2)
    text = metrics.render().decode()
    for line in (
        'modelroute_requests_total{endpoint="llama",outcome="ok",region="eu-west",replica="eu-1",route="chat"} 1.0',
        'modelroute_request_duration_seconds_bucket{le="0.005",outcome="ok",route="chat"} 1.0',
        'modelroute_upstream_duration_seconds_count{endpoint="llama",outcome="ok",region="eu-west",replica="eu-1"} 1.0',
        'modelroute_tokens_total{direction="out",endpoint="llama"} 5.0',
        'modelroute_estimated_cost_usd_total{endpoint="llama"} 0.5',
        'modelroute_retries_total{endpoint="llama",reason="connect"} 1.0',
        'modelroute_config_info{schema="2",version="sha256:2"} 1.0',
    ):
        assert line in text
    assert "sha256:1" not in text  # the info gauge names only the applied version
    assert "# TYPE modelroute_requests_total counter" in text
    assert samples(text)  # the library reads it


def test_workers_merge_into_one_exposition_the_library_reads() -> None:
    workers = [Metrics(), Metrics()]
    for index, metrics in enumerate(workers):
        metrics.count_request("chat", "llama", "eu-1", "eu-west", "ok", 0.004 * (index + 1))
        metrics.retries.labels("llama", 'a "quoted" reason').inc(index + 1)
        metrics.set_config_version("sha256:1", 2)
    merged = samples(merge_expositions(m.render().decode() for m in workers).decode())
    assert (
        merged[
            (
                "modelroute_requests_total",
                (
                    ("endpoint", "llama"),
                    ("outcome", "ok"),
                    ("region", "eu-west"),
                    ("replica", "eu-1"),
                    ("route", "chat"),
                ),
            )
        ]
        == 2
    )
    assert (
        merged[("modelroute_request_duration_seconds_sum", (("outcome", "ok"), ("route", "chat")))]
        == 0.004 + 0.008
    )
    assert (
        merged[
            (
                "modelroute_request_duration_seconds_bucket",
                (("le", "0.005"), ("outcome", "ok"), ("route", "chat")),
            )
        ]
        == 1
    )
    assert merged[("modelroute_retries_total", (("endpoint", "llama"), ("reason", 'a "quoted" reason')))] == 3
    assert merged[("modelroute_config_info", (("schema", "2"), ("version", "sha256:1")))] == 1  # a gauge is not summed
