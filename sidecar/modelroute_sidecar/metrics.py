"""Prometheus metrics of the sidecar, in a registry of its own (never the global one).

Labels are bounded by the config, never by clients: route (the API: chat, completions, embeddings),
endpoint, replica, region, outcome. Tenant ids, prompts and request ids never become labels.

The families every request updates (requests, request and upstream durations, tokens, cost) are plain
numbers in dicts, turned into metric families only when scraped (`HotCounter`, `HotHistogram`): an
update is a dict lookup and an addition, where prometheus_client's `inc`/`observe` take a lock and a
chain of calls each, which measured at ~6% of the sidecar's instructions per request. The rest, which
change rarely (retries, ejections, ...), are ordinary prometheus_client metrics.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HotCounter(Collector):
    """A counter family updated from the event loop's thread only, so without a lock.

    `values` maps label values (in `labels` order) to the running total; it is read when scraped,
    on the same thread, so a scrape never sees half an update.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labels = list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """Add `amount` to the series `key`."""
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        yield family


class HotHistogram(Collector):
    """A histogram family updated from the event loop's thread only: per series, a count per bucket
    (not cumulative; the last one is +Inf) and the sum, made cumulative when scraped."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count `value` in the series `key`."""
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)  # buckets, +Inf, then the sum
        counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        counts[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        # the library's own `le` formatting (unannotated there), so the text matches its Histogram's
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, counts in self.series.items():
            cumulative = 0.0
            buckets = []
            for edge, count in zip(edges, counts, strict=False):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(key, buckets, counts[-1])
        yield family


class ReadCounter(Collector):
    """A counter family kept by another component and read when scraped (`read` returns the totals
    by label values)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labels = list(labels)
        self.read: Callable[[], Mapping[tuple[str, ...], float]] = dict

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.read().items():
            family.add_metric(key, value)
        yield family


class Metrics:
    """Every metric the sidecar exports."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = HotCounter(
            "modelroute_requests_total",
            "Client requests by API route, the endpoint/replica/region that answered, and outcome.",
            ["route", "endpoint", "replica", "region", "outcome"],
        )
        self.request_duration = HotHistogram(
            "modelroute_request_duration_seconds",
            "Time from request to the last byte of the response, as the client sees it.",
            ["route", "outcome"],
            LATENCY_BUCKETS_S,
        )
        self.upstream_duration = HotHistogram(
            "modelroute_upstream_duration_seconds",
            "Time of one upstream attempt until its response headers (streams) or body (others).",
            ["endpoint", "replica", "region", "outcome"],
            LATENCY_BUCKETS_S,
        )
        self.tokens = HotCounter(
            "modelroute_tokens_total",
            "Tokens by direction (in: prompt, out: completion) as reported by the upstream's usage.",
            ["endpoint", "direction"],
        )
        self.cost = HotCounter(
            "modelroute_estimated_cost_usd_total",
            "Estimated spend in US dollars from reported usage and the endpoint's prices.",
            ["endpoint"],
        )
        for family in (self.requests, self.request_duration, self.upstream_duration, self.tokens, self.cost):
            r.register(family)
        self.audit_lines_dropped = ReadCounter(
            "modelroute_audit_lines_dropped_total",
            "Audit log lines lost: queue-full (the writer fell behind), write-failed (e.g. a full disk).",
            ["reason"],
        )
        r.register(self.audit_lines_dropped)
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
            "modelroute_config_info",
            "The applied RouterConfig version and its schema (value 1).",
            # sidecars of different schemas run different documents of one config: alerts compare
            # versions within a schema (schema-1 sidecars have no such label)
            ["version", "schema"],
            registry=r,
        )
        self.config_errors = Counter(
            "modelroute_config_rejected_total", "Config pushes or files refused.", ["source"], registry=r
        )
        self._config_version: tuple[str, str] | None = None

    def count_request(
        self, route: str, endpoint: str, replica: str, region: str, outcome: str, seconds: float
    ) -> None:
        """One finished client request."""
        self.requests.inc((route, endpoint, replica, region, outcome))
        self.request_duration.observe((route, outcome), seconds)

    def observe_upstream(
        self, endpoint: str, replica: str, region: str, outcome: str, seconds: float
    ) -> None:
        """One upstream attempt."""
        self.upstream_duration.observe((endpoint, replica, region, outcome), seconds)

    def count_tokens(self, endpoint: str, tokens_in: int, tokens_out: int, cost: float) -> None:
        """Usage an upstream reported and what it cost."""
        self.tokens.inc((endpoint, "in"), tokens_in)
        self.tokens.inc((endpoint, "out"), tokens_out)
        if cost:
            self.cost.inc((endpoint,), cost)

    def set_config_version(self, version: str, schema: int) -> None:
        """Point the info metric at the applied version (dropping the previous one)."""
        if self._config_version is not None:
            self.config_info.remove(*self._config_version)
        self._config_version = (version, str(schema))
        self.config_info.labels(*self._config_version).set(1)

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
