"""Prometheus metrics of the sidecar: its own small families and text exposition (no client library).

Labels are bounded by the config, never by clients: route (the API: chat, completions, embeddings),
endpoint, replica, region, outcome. Tenant ids, prompts and request ids never become labels.

Every family is plain numbers in a dict keyed by label values, turned into text only when scraped:
an update is a dict lookup and an addition, where prometheus_client's `inc`/`observe` take a lock and
a chain of calls each (measured at ~6% of the sidecar's instructions per request), and the library
itself (with its HTTP servers, WSGI and parser modules) cost each process about 4.5 MiB of memory and
a tenth of its import time. The text is what prometheus_client writes for the same values (labels
sorted, Go-style floats, histogram buckets cumulative, then `_count` and `_sum`; no `_created`
samples), which tests/unit/test_metrics.py checks with the library as the oracle. Updates happen on
the event loop's thread only, and a scrape runs there too, so it never sees half an update.

A multi-process sidecar answers a scrape with the sum over its workers (`merge_expositions`), which
reads back exactly this format.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

FEEDBACK_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def go_float(value: float) -> str:
    """A sample value or bucket bound as Prometheus (and prometheus_client) writes it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(names: Sequence[str], values: Sequence[str], le: str | None = None) -> str:
    pairs = list(zip(names, values, strict=True))
    if le is not None:
        pairs.append(("le", le))
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(pairs))
    return "{" + text + "}" if text else ""


class Family:
    """A metric family: name, help text, label names, kind; `expose` appends its text lines."""

    kind = "untyped"

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)

    def exposed_name(self) -> str:
        return self.name

    def expose(self, lines: list[str]) -> None:
        name = self.exposed_name()
        help_text = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {self.kind}")
        self.expose_samples(lines)

    def expose_samples(self, lines: list[str]) -> None:
        raise NotImplementedError


class _Bound:
    """`counter.labels(*values)`: one series of a counter, for the call sites that read better so."""

    __slots__ = ("_counter", "_key")

    def __init__(self, counter: HotCounter, key: tuple[str, ...]) -> None:
        self._counter, self._key = counter, key

    def inc(self, amount: float = 1.0) -> None:
        self._counter.inc(self._key, amount)


class HotCounter(Family):
    """A counter family: `values` maps label values (in `labels` order) to the running total."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def exposed_name(self) -> str:
        return self.name + "_total"

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """Add `amount` to the series `key`."""
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def labels(self, *values: str) -> _Bound:
        """The series of these label values (prometheus_client's spelling: `.labels(...).inc()`)."""
        return _Bound(self, values)

    def value(self, *values: str) -> float:
        """The total of one series (0 when never counted)."""
        return self.values.get(values, 0.0)

    def current(self) -> Mapping[tuple[str, ...], float]:
        return self.values

    def expose_samples(self, lines: list[str]) -> None:
        name = self.exposed_name()
        for key, value in self.current().items():
            lines.append(f"{name}{_labels(self.label_names, key)} {go_float(value)}")


class ReadCounter(HotCounter):
    """A counter family kept by another component and read when scraped (`read` returns the totals
    by label values)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels)
        self.read: Callable[[], Mapping[tuple[str, ...], float]] = dict

    def current(self) -> Mapping[tuple[str, ...], float]:
        return self.read()


class Gauge(Family):
    """A gauge family: `values` maps label values to the current value."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def expose_samples(self, lines: list[str]) -> None:
        for key, value in self.values.items():
            lines.append(f"{self.name}{_labels(self.label_names, key)} {go_float(value)}")


class HotHistogram(Family):
    """A histogram family: per series, a count per bucket (not cumulative; the last one is +Inf) and
    the sum, made cumulative when scraped."""

    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labels)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count `value` in the series `key`."""
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)  # buckets, +Inf, then the sum
        counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        counts[-1] += value

    def expose_samples(self, lines: list[str]) -> None:
        edges = [go_float(b) for b in self.bounds] + ["+Inf"]
        name = self.name
        for key, counts in self.series.items():
            cumulative = 0.0
            for edge, count in zip(edges, counts, strict=False):
                cumulative += count
                lines.append(f"{name}_bucket{_labels(self.label_names, key, edge)} {go_float(cumulative)}")
            plain = _labels(self.label_names, key)
            lines.append(f"{name}_count{plain} {go_float(cumulative)}")
            lines.append(f"{name}_sum{plain} {go_float(counts[-1])}")


class Metrics:
    """Every metric the sidecar exports."""

    def __init__(self) -> None:
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
        self.audit_lines_dropped = ReadCounter(
            "modelroute_audit_lines_dropped_total",
            "Audit log lines lost: queue-full (the writer fell behind), write-failed (e.g. a full disk).",
            ["reason"],
        )
        arm = ["policy", "rule", "endpoint"]
        self.bandit_pulls = ReadCounter(
            "modelroute_bandit_pulls_total",
            "Requests a bandit rule (strategy: bandit) sent first to each of its target endpoints.",
            arm,
        )
        self.bandit_reward = ReadCounter(
            "modelroute_bandit_reward_total",
            "A bandit arm's reward seen (its posterior's alpha - 1): the sum of its feedback scores.",
            arm,
        )
        self.bandit_shortfall = ReadCounter(
            "modelroute_bandit_shortfall_total",
            "A bandit arm's shortfall seen (its posterior's beta - 1): 1 - score per feedback post, 1 per "
            "failed attempt. Both restart when a config changes the rule's targets.",
            arm,
        )
        self.retries = HotCounter(
            "modelroute_retries_total",
            "Upstream attempts after the first.",
            ["endpoint", "reason"],
        )
        self.retries_denied = HotCounter(
            "modelroute_retry_budget_exhausted_total",
            "Retries not made because the retry budget was spent.",
            ["route"],
        )
        self.failovers = HotCounter(
            "modelroute_failovers_total",
            "Requests answered by another endpoint or region than the first choice.",
            ["from_endpoint", "to_endpoint"],
        )
        self.escalations = HotCounter(
            "modelroute_escalations_total",
            "Requests sent on to the escalation chain after an answer failed a check.",
            ["endpoint", "reason"],
        )
        self.schema_checks = HotCounter(
            "modelroute_schema_checks_total",
            "Answers checked against the request's JSON schema, by result (ok, mismatch, timeout).",
            ["result"],
        )
        self.ejections = HotCounter(
            "modelroute_ejections_total",
            "Passive ejections of replicas.",
            ["endpoint", "replica"],
        )
        self.residency_blocks = HotCounter(
            "modelroute_residency_blocks_total",
            "Requests refused because no replica allowed for their data class could serve them.",
            ["route", "data_class"],
        )
        self.affinity = HotCounter(
            "modelroute_affinity_total",
            "Requests of rules with session affinity, by outcome (kept, new, broken) and why a pin broke "
            "(a drop reason, fallback or gone: a bounded set).",
            ["outcome", "reason"],
        )
        self.shadow = HotCounter(
            "modelroute_shadow_total",
            "Shadow copies of rules that mirror traffic, by outcome: ok, error, timeout (sent), busy, "
            "rate-limited, client-closed, residency, unavailable (skipped).",
            ["policy", "rule", "endpoint", "outcome"],
        )
        self.config_info = Gauge(
            "modelroute_config_info",
            "The applied RouterConfig version and its schema (value 1).",
            # sidecars of different schemas run different documents of one config: alerts compare
            # versions within a schema (schema-1 sidecars have no such label)
            ["version", "schema"],
        )
        self.config_errors = HotCounter(
            "modelroute_config_rejected_total", "Config pushes or files refused.", ["source"]
        )
        self.fleet_store_down = Gauge(
            "modelroute_fleet_store_down",
            "1 while the fleet store (Redis/Valkey) is unreachable from a worker that needs it, else 0.",
            [],
        )
        self.fleet_store_errors = HotCounter(
            "modelroute_fleet_store_errors_total", "Fleet store calls that failed or timed out.", []
        )
        self.fleet_refused = HotCounter(
            "modelroute_fleet_refused_total",
            "Requests refused by fleet limits: requests, tokens, budget-day, budget-month, "
            "store-unavailable (fail-closed), tenants-full (more budgeted tenants than a process tracks).",
            ["policy", "reason"],
        )
        self.fleet_local_admissions = HotCounter(
            "modelroute_fleet_fail_open_admissions_total",
            "Requests admitted under per-process limits because the fleet store was unreachable.",
            ["policy"],
        )
        self.budget_warnings = HotCounter(
            "modelroute_budget_soft_exceeded_total",
            "Answers sent past a budget's soft threshold (with x-modelroute-budget-warning).",
            ["policy", "period"],
        )
        self.fleet_spend = Gauge(
            "modelroute_fleet_spend_usd",
            "Fleet-wide spend of the current day/month as this process last read it: subject=policy for "
            "the policy's own budget, subject=tenant-max for the highest of its tenants' (per-tenant "
            "figures: /stats and `modelroute spend`, never labels).",
            ["policy", "subject", "period"],
        )
        self.fleet_tenants = Gauge(
            "modelroute_fleet_budget_tenants",
            "Tenants whose budgets this process tracks per policy (at most 4096; past it new tenants "
            "get 503 fleet_tenants_full while none can be set aside).",
            ["policy"],
        )

        self.feedback_score = HotHistogram(
            "modelroute_feedback_score",
            "Quality feedback scores (0-1, POST /v1/feedback) by the policy, rule and endpoint that served.",
            ["policy", "rule", "endpoint"],
            FEEDBACK_BUCKETS,
        )
        self.feedback_refused = HotCounter(
            "modelroute_feedback_refused_total",
            "Feedback posts refused: invalid (a bad body), unauthenticated, unknown_request (an id unknown "
            "or expired).",
            ["reason"],
        )

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
        self.config_info.values = {(version, str(schema)): 1.0}

    def families(self) -> list[Family]:
        """Every family, in the order they are exposed."""
        return [value for value in vars(self).values() if isinstance(value, Family)]

    def render(self) -> bytes:
        """The Prometheus text exposition of this process."""
        lines: list[str] = []
        for family in self.families():
            family.expose(lines)
        return ("\n".join(lines) + "\n").encode()


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def _parse_value(text: str) -> float:
    return float(text.replace("+Inf", "inf").replace("-Inf", "-inf").replace("NaN", "nan"))


def merge_expositions(texts: Iterable[str]) -> bytes:
    """Sum the expositions (this module's own format) of several workers of one pod into one: counters
    and histograms are added, gauges (the info gauge) take the largest value."""
    order: list[str] = []
    headers: dict[str, tuple[str, str]] = {}
    samples: dict[str, dict[tuple[str, str], float]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP "):
                family, _, doc = line[7:].partition(" ")
                if family not in headers:
                    order.append(family)
                    headers[family] = ("untyped", doc)
                    samples[family] = {}
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                headers[name] = (kind, headers.get(name, ("", ""))[1])
            elif line and not line.startswith("#"):
                found = _SAMPLE.match(line)
                if found is None or not family:
                    continue
                sample, labels, value = found.group(1), found.group(2) or "", _parse_value(found.group(3))
                bucket = samples[family]
                key = (sample, labels)
                if headers[family][0] == "gauge":
                    bucket[key] = max(bucket.get(key, value), value)
                else:
                    bucket[key] = bucket.get(key, 0.0) + value
    lines: list[str] = []
    for name in order:
        kind, doc = headers[name]
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample, labels), value in samples[name].items():
            lines.append(
                f"{sample}{{{labels}}} {go_float(value)}" if labels else f"{sample} {go_float(value)}"
            )
    return ("\n".join(lines) + "\n").encode()
