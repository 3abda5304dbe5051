"""Prometheus metrics of the sidecar, in a registry of its own (never the global one).

Labels are bounded by the config, never by clients: route (the API: chat, completions, embeddings),
endpoint, replica, region, outcome. Tenant ids, prompts and request ids never become labels. Label
children are cached so the hot path does a dict lookup, not a `labels()` call with its lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric the sidecar exports."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "modelroute_requests_total",
            "Client requests by API route, the endpoint/replica/region that answered, and outcome.",
            ["route", "endpoint", "replica", "region", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "modelroute_request_duration_seconds",
            "Time from request to the last byte of the response, as the client sees it.",
            ["route", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "modelroute_upstream_duration_seconds",
            "Time of one upstream attempt until its response headers (streams) or body (others).",
            ["endpoint", "replica", "region", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "modelroute_tokens_total",
            "Tokens by direction (in: prompt, out: completion) as reported by the upstream's usage.",
            ["endpoint", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "modelroute_estimated_cost_usd_total",
            "Estimated spend in US dollars from reported usage and the endpoint's prices.",
            ["endpoint"],
            registry=r,
        )
        self.retries = Counter(
            "modelroute_retries_total",
            "Upstream attempts after the first.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.retries_denied = Counter(
            "modelroute_retry_budget_exhausted_total",
            "Retries not made because the retry budget was spent.",
            ["route"],
            registry=r,
        )
        self.failovers = Counter(
            "modelroute_failovers_total",
            "Requests answered by another endpoint or region than the first choice.",
            ["from_endpoint", "to_endpoint"],
            registry=r,
        )
        self.escalations = Counter(
            "modelroute_escalations_total",
            "Requests sent on to the escalation chain after an answer failed a check.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.ejections = Counter(
            "modelroute_ejections_total",
            "Passive ejections of replicas.",
            ["endpoint", "replica"],
            registry=r,
        )
        self.residency_blocks = Counter(
            "modelroute_residency_blocks_total",
            "Requests refused because no replica allowed for their data class could serve them.",
            ["route", "data_class"],
            registry=r,
        )
        self.config_info = Gauge(
            "modelroute_config_info", "The applied RouterConfig version (value 1).", ["version"], registry=r
        )
        self.config_errors = Counter(
            "modelroute_config_rejected_total", "Config pushes or files refused.", ["source"], registry=r
        )
        self._request_children: dict[tuple[str, str, str, str, str], Counter] = {}
        self._upstream_children: dict[tuple[str, str, str, str], Histogram] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._token_children: dict[str, tuple[Counter, Counter, Counter]] = {}
        self._config_version = ""

    def count_request(
        self, route: str, endpoint: str, replica: str, region: str, outcome: str, seconds: float
    ) -> None:
        """One finished client request."""
        key = (route, endpoint, replica, region, outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()
        dkey = (route, outcome)
        duration = self._duration_children.get(dkey)
        if duration is None:
            duration = self._duration_children[dkey] = self.request_duration.labels(*dkey)
        duration.observe(seconds)

    def observe_upstream(
        self, endpoint: str, replica: str, region: str, outcome: str, seconds: float
    ) -> None:
        """One upstream attempt."""
        key = (endpoint, replica, region, outcome)
        child = self._upstream_children.get(key)
        if child is None:
            child = self._upstream_children[key] = self.upstream_duration.labels(*key)
        child.observe(seconds)

    def count_tokens(self, endpoint: str, tokens_in: int, tokens_out: int, cost: float) -> None:
        """Usage an upstream reported and what it cost."""
        children = self._token_children.get(endpoint)
        if children is None:
            children = self._token_children[endpoint] = (
                self.tokens.labels(endpoint, "in"),
                self.tokens.labels(endpoint, "out"),
                self.cost.labels(endpoint),
            )
        children[0].inc(tokens_in)
        children[1].inc(tokens_out)
        if cost:
            children[2].inc(cost)

    def set_config_version(self, version: str) -> None:
        """Point the info metric at the applied version (dropping the previous one)."""
        if self._config_version:
            self.config_info.remove(self._config_version)
        self._config_version = version
        self.config_info.labels(version).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of this process."""
        return generate_latest(self.registry)


def merge_expositions(texts: Iterable[str]) -> bytes:
    """Sum the expositions of several workers of one pod into one (info gauges are max'd, not summed)."""
    order: list[str] = []
    headers: dict[str, tuple[str, str]] = {}
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in headers:
                order.append(family.name)
                headers[family.name] = (family.type, family.documentation)
                samples[family.name] = {}
            bucket = samples[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if family.type == "gauge":
                    bucket[key] = max(bucket.get(key, sample.value), sample.value)
                else:
                    bucket[key] = bucket.get(key, 0.0) + sample.value
    lines: list[str] = []
    for name in order:
        kind, doc = headers[name]
        exposed = name + "_total" if kind == "counter" else name
        lines.append(f"# HELP {exposed} {doc}")
        lines.append(f"# TYPE {exposed} {kind}")
        for (sample_name, labels), value in samples[name].items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{label_text}}} {value!r}" if labels else f"{sample_name} {value!r}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
