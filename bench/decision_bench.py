"""Micro-benchmark of the decision engine: `extract_features` and `Router.decide` on a realistic policy.

The policy is the shape issue 3 names: 20 ordered rules, residency with two data classes and four
detectors, a canary on one rule, three regions, eight endpoints with two or three replicas each, budgets,
fallback and escalation chains. The request mix varies model, metadata, headers, prompt size (a few
words to ~8 KB), code, math, multi-step prompts and personal data, and the health view has one ejected
replica. Each request is decided many times; the figures are per call.

Run: .venv/bin/python bench/decision_bench.py [--rounds N]
Target (issue 3): decide() median <= 50 µs on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from modelroute_contract import (
    BUILTIN_DIFFICULTY_SHA256,
    BUILTIN_DIFFICULTY_VERSION,
    BanditSettings,
    Budgets,
    CanarySplit,
    Capabilities,
    DataClassRule,
    Detector,
    DifficultyModel,
    EndpointConfig,
    HeaderMatch,
    Health,
    Locality,
    PolicyConfig,
    Pricing,
    RangeMatch,
    ReplicaConfig,
    Residency,
    RouterConfig,
    RuleConfig,
    RuleMatch,
    SemanticMatch,
    SemanticRoute,
    Target,
)
from modelroute_sidecar.bandit import BanditTable
from modelroute_sidecar.engine import Api, RequestFeatures, Router, extract_features

REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
REPO = Path(__file__).resolve().parents[1]


def replicas(name: str, regions: tuple[str, ...], unhealthy: str = "") -> tuple[ReplicaConfig, ...]:
    labels = {"eu-west-1": ("gdpr",), "eu-central-1": ("gdpr", "pci"), "us-east-1": ("pci", "soc2")}
    return tuple(
        ReplicaConfig(
            name=f"{name}-{region}",
            region=region,
            url=f"http://{name}.{region}.example:8000/v1",
            weight=100,
            compliance=labels[region],
            health=Health.UNHEALTHY if region == unhealthy else Health.HEALTHY,
        )
        for region in regions
    )


def endpoint(
    name: str,
    regions: tuple[str, ...],
    price: tuple[float, float],
    context: int = 128_000,
    unhealthy: str = "",
    **caps: Any,
) -> EndpointConfig:
    return EndpointConfig(
        name=name,
        model=f"{name}-upstream",
        capabilities=Capabilities(context_window=context, **caps),
        pricing=Pricing(input_per_million=price[0], output_per_million=price[1]),
        replicas=replicas(name, regions, unhealthy),
    )


EMPLOYEE_ID = r"(?i)\bemp-\d{6}\b"
"""The one `pattern` detector of the `+ pattern detector` figures: an employee id."""


SEMANTIC_EXAMPLES = {
    "code": ("Write a Python function that parses a CSV file", "Fix this segmentation fault in C"),
    "billing": ("Why was I charged twice this month?", "How do I update my credit card?"),
    "chitchat": ("Hi, how are you?", "Tell me a joke"),
}


def build_config(
    score_every_prompt: bool = False,
    pattern_detector: bool = False,
    learned: bool = False,
    bandit: bool = False,
) -> RouterConfig:
    """The benchmark policy. `score_every_prompt` puts a never-matching complexity rule first, so every
    request pays for the complexity score (the engine otherwise scores only when a rule needs it).
    `learned` puts a semantic rule and a learned-score rule first (the builtin model), which every
    request reaches: it pays for one embedding, the semantic route and the learned score. `bandit` makes
    every rule with two or more targets (`default` among them) a bandit rule (cost-aware, costWeight 0.3)."""
    endpoints = (
        endpoint("mini", REGIONS, (0.15, 0.6), tools=True, json_mode=True),
        endpoint("llama-8b", REGIONS[:2], (0.1, 0.1), context=8192),
        endpoint("llama-70b", REGIONS, (0.6, 0.8), unhealthy="us-east-1", tools=True),
        endpoint("mixtral", REGIONS[1:], (0.3, 0.5), context=32_768, json_mode=True),
        endpoint("gpt-large", REGIONS, (2.5, 10.0), tools=True, json_mode=True),
        endpoint("expert", ("us-east-1", "eu-central-1"), (15.0, 60.0), tools=True),
        endpoint("coder", REGIONS, (0.5, 1.5), tools=True),
        endpoint("embed", REGIONS[:2], (0.02, 0.0), streaming=False),
    )

    def rule(name: str, targets: dict[str, int], **match: Any) -> RuleConfig:
        extra = {k: match.pop(k) for k in ("fallback", "escalation", "canary") if k in match}
        return RuleConfig(
            name=name,
            match=RuleMatch(**match),
            targets=tuple(Target(endpoint=e, weight=w) for e, w in sorted(targets.items())),
            **extra,
        )

    rules: tuple[RuleConfig, ...] = (
        rule("embeddings", {"embed": 100}, models=("embed",)),
        rule("pci-data", {"llama-70b": 100}, data_classes=("pci",), fallback=("gpt-large",)),
        rule(
            "vip-tenant", {"gpt-large": 100}, metadata={"tenant": ("acme", "globex")}, escalation=("expert",)
        ),
        rule("debug-header", {"mini": 100}, headers=(HeaderMatch(name="x-debug-route", values=("mini",)),)),
        rule("legal-domain", {"gpt-large": 70, "llama-70b": 30}, metadata={"domain": ("legal",)}),
        rule(
            "medical-domain", {"llama-70b": 100}, metadata={"domain": ("medical",)}, fallback=("gpt-large",)
        ),
        rule("translate", {"mixtral": 100}, metadata={"task": ("translate",)}, fallback=("mini",)),
        rule("german", {"mixtral": 60, "llama-70b": 40}, metadata={"language": ("de",)}),
        rule("french", {"mixtral": 100}, metadata={"language": ("fr",)}),
        rule("code-tier-pro", {"coder": 80, "gpt-large": 20}, metadata={"task": ("code",), "tier": ("pro",)}),
        rule("code", {"coder": 100}, metadata={"task": ("code",)}, escalation=("gpt-large",)),
        rule(
            "summaries", {"mini": 100}, metadata={"task": ("summarize",)}, prompt_tokens=RangeMatch(max=4000)
        ),
        rule("long-summaries", {"mixtral": 100}, metadata={"task": ("summarize",)}),
        rule("free-tier", {"llama-8b": 100}, metadata={"tier": ("free",)}, fallback=("mini",)),
        rule(
            "support-bot",
            {"mini": 100},
            models=("support-bot",),
            fallback=("llama-70b",),
            escalation=("gpt-large",),
            canary=CanarySplit(
                name="mini-to-llama",
                stable="mini",
                candidate="llama-70b",
                candidate_weight=30,
                stickiness_metadata="user",
            ),
        ),
        rule(
            "eu-personal-hard",
            {"gpt-large": 100},
            data_classes=("eu-personal",),
            complexity=RangeMatch(min=50),
        ),
        rule("eu-personal", {"llama-70b": 100}, data_classes=("eu-personal",), fallback=("mini",)),
        rule("very-hard", {"expert": 100}, complexity=RangeMatch(min=70), fallback=("gpt-large",)),
        rule("hard", {"gpt-large": 100}, complexity=RangeMatch(min=35), escalation=("expert",)),
        rule("default", {"mini": 70, "llama-70b": 30}, fallback=("llama-8b",), escalation=("gpt-large",)),
    )
    if bandit:
        settings = BanditSettings(cost_weight=0.3, explore=0.05)
        rules = tuple(
            r.model_copy(update={"strategy": "bandit", "bandit": settings}) if len(r.targets) > 1 else r
            for r in rules
        )
    if score_every_prompt:
        # A first rule every request reaches and (a score of exactly 100 aside) none matches: it forces a
        # complexity score. (min=101 was refused once the contract bounded ranges to 0-100.)
        rules = (rule("score-every-prompt", {"mini": 100}, complexity=RangeMatch(min=100)), *rules)
    extra: dict[str, Any] = {}
    if learned:
        rules = (
            rule("code", {"mixtral": 100}, semantic=SemanticMatch(route="code", min_similarity=0.8)),
            rule(
                "learned-hard", {"expert": 100}, complexity=RangeMatch(min=100), complexity_scorer="builtin"
            ),
            *rules,
        )
        extra = {
            "difficulty_models": (
                DifficultyModel(
                    name="builtin", version=BUILTIN_DIFFICULTY_VERSION, sha256=BUILTIN_DIFFICULTY_SHA256
                ),
            ),
            "semantic_routes": tuple(
                SemanticRoute(name=name, examples=examples) for name, examples in SEMANTIC_EXAMPLES.items()
            ),
        }
    policy = PolicyConfig(
        **extra,
        name="auto",
        virtual_models=("auto", "embed", "support-bot"),
        rules=rules,
        residency=Residency(
            data_classes=(
                DataClassRule(name="eu-personal", allowed_regions=REGIONS[:2], required_compliance=("gdpr",)),
                DataClassRule(name="pci", required_compliance=("pci",)),
            ),
            tenant_defaults={"bank-eu": "pci", "clinic": "eu-personal"},
            detectors=(
                Detector(kind="card", data_class="pci"),
                Detector(kind="iban", data_class="pci"),
                Detector(kind="email", data_class="eu-personal"),
                Detector(kind="phone", data_class="eu-personal"),
                *(
                    [
                        Detector(
                            kind="pattern", name="employee-id", pattern=EMPLOYEE_ID, data_class="eu-personal"
                        )
                    ]
                    if pattern_detector
                    else []
                ),
            ),
        ),
        locality=Locality(failover_order=("eu-central-1", "us-east-1")),
        budgets=Budgets(max_cost_per_request_usd=0.5, max_latency_ms=8000),
    )
    return RouterConfig(namespace="bench", endpoints=endpoints, policies=(policy,)).seal()


class BenchHealth:
    """One passively ejected replica, observed latencies for most endpoints."""

    def __init__(self) -> None:
        self._ejected = {("mini", "mini-eu-west-1")}
        self._p95 = {"mini": 400.0, "llama-70b": 1500.0, "gpt-large": 2500.0, "expert": 9000.0}

    def is_ejected(self, endpoint: str, replica: str) -> bool:
        return (endpoint, replica) in self._ejected

    def any_ejected(self) -> bool:
        return bool(self._ejected)

    def p95_latency_ms(self, endpoint: str) -> float | None:
        return self._p95.get(endpoint)


PROSE = (
    "Our customer wrote in about a delayed delivery and wants to know what happens next. "
    "Please be friendly and keep it short. "
)
CODE = "```python\ndef total(items):\n    return sum(i.price for i in items if i.qty > 0)\n```\n"
MATH = "Solve for x: 3x^2 + 5x - 2 = 0, then prove the roots are rational. "
STEPS = "First analyze the trade-offs, then compare both designs step by step:\n1. latency\n2. cost\n"


def requests(rng: random.Random) -> list[tuple[dict[str, Any], dict[str, str], Api]]:
    """A varied mix: (body, headers, api)."""
    mix: list[tuple[dict[str, Any], dict[str, str], Api]] = []
    metadata_options: list[dict[str, str]] = [
        {},
        {"tier": "free"},
        {"task": "code"},
        {"task": "code", "tier": "pro"},
        {"task": "summarize"},
        {"language": "de"},
        {"domain": "legal"},
        {"tenant": "acme"},
        {"tenant": "bank-eu"},
        {"task": "translate"},
    ]
    for i in range(400):
        kind = i % 10
        size = rng.choice((1, 1, 2, 4, 8, 16, 40))
        text = PROSE * size
        if kind == 1:
            text += CODE + "Why does this return 0? Explain why."
        elif kind == 2:
            text += MATH
        elif kind == 3:
            text += STEPS
        elif kind == 4:
            text += "You can reach me at jane.doe@example.com or +44 20 7946 0958."
        elif kind == 5:
            text += "Refund to card 4111 1111 1111 1111 please."
        elif kind == 6:
            text += f"Order {rng.randrange(10**9)} shipped on 2024-05-0{rng.randrange(1, 9)}."
        model = "support-bot" if kind == 7 else "auto"
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text},
            ],
            "metadata": dict(rng.choice(metadata_options)),
        }
        if kind == 7:  # the canary route: sticky by user
            body["metadata"] = {"user": f"user-{rng.randrange(5000)}"}
        if i % 17 == 0:
            body["tools"] = [{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}]
        if i % 7 == 0:
            body["stream"] = True
        if i % 11 == 0:
            body["max_tokens"] = 512
        headers = {"content-type": "application/json", "authorization": "Bearer x", "x-request-id": str(i)}
        if i % 13 == 0:
            headers["x-modelroute-data-class"] = "public"
        mix.append((body, headers, "chat"))
    for i in range(40):
        mix.append(({"model": "embed", "input": [PROSE * (1 + i % 5)]}, {}, "embeddings"))
    rng.shuffle(mix)
    return mix


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def time_calls(calls: list[Any], rounds: int) -> list[float]:
    """µs per call, one sample per call per round."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for call in calls:
            start = clock()
            call()
            samples.append((clock() - start) / 1000)
    return samples


def measure(
    router: Router, features: list[RequestFeatures], rounds: int, bandits: BanditTable | None = None
) -> list[float]:
    """µs per decide() over the mix, with the collector off (its pauses are the server's concern)."""
    health = BenchHealth()
    gc.collect()
    gc.disable()
    try:
        return time_calls([(lambda f=f: router.decide(f, health, bandits=bandits)) for f in features], rounds)
    finally:
        gc.enable()


def report(name: str, samples: list[float]) -> None:
    median, p99, mean = statistics.median(samples), percentile(samples, 0.99), statistics.fmean(samples)
    print(f"{name:27s} median {median:6.1f} µs   p99 {p99:6.1f} µs   mean {mean:6.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="passes over the request mix")
    args = parser.parse_args()

    config = build_config()
    started = time.perf_counter()
    router = Router(config, local_region="eu-west-1")
    build_ms = (time.perf_counter() - started) * 1000
    scoring_router = Router(build_config(score_every_prompt=True), local_region="eu-west-1")
    pattern_router = Router(build_config(pattern_detector=True), local_region="eu-west-1")
    mix = requests(random.Random(7))
    features: list[RequestFeatures] = [
        extract_features(body, headers, f"req-{i}", api) for i, (body, headers, api) in enumerate(mix)
    ]
    decisions = [router.decide(f, BenchHealth()) for f in features]
    outcomes = Counter(d.error.code if d.error else d.rule for d in decisions)
    scored = sum(d.complexity >= 0 for d in decisions)

    gc.collect()
    gc.disable()
    try:
        extract = time_calls(
            [
                (lambda b=body, h=headers, a=api, i=i: extract_features(b, h, f"req-{i}", a))
                for i, (body, headers, api) in enumerate(mix)
            ],
            args.rounds,
        )
    finally:
        gc.enable()
    decide = measure(router, features, args.rounds)
    numpy_loaded = "numpy" in sys.modules  # the policy has no learned rule: nothing may load numpy
    decide_scoring = measure(scoring_router, features, args.rounds)
    decide_pattern = measure(pattern_router, features, args.rounds)

    rules = len(config.policies[0].rules)
    replica_count = sum(len(e.replicas) for e in config.endpoints)
    print(
        f"policy: {rules} rules, {len(config.endpoints)} endpoints, {replica_count} replicas, "
        f"3 regions, 2 data classes, 4 detectors, 1 canary; router built in {build_ms:.1f} ms"
    )
    print(f"requests: {len(mix)} distinct x {args.rounds} rounds; outcomes: {dict(outcomes.most_common())}")
    print(f"complexity scored for {scored} of {len(decisions)} (when a rule reached has a complexity range)")
    report("extract_features", extract)
    report("decide", decide)
    print(f"  (numpy imported after deciding with a policy without learned rules: {numpy_loaded})")
    report("decide, every prompt scored", decide_scoring)
    report("decide, + pattern detector", decide_pattern)
    median = statistics.median(decide)
    print(f"target decide() median <= 50 µs: {'met' if median <= 50 else 'NOT met'} ({median:.1f} µs)")
    report_detector_cost(args.rounds)
    report_bandit_cost(router, features, args.rounds)
    report_learned_cost(features, args.rounds)


def report_bandit_cost(router: Router, features: list[RequestFeatures], rounds: int) -> None:
    """decide() with the multi-target rules as bandit rules (posteriors with some evidence, as a sidecar
    holds them) beside the same policy weighted; then only the requests the `default` rule serves."""
    bandit_router = Router(build_config(bandit=True), local_region="eu-west-1")
    table = BanditTable()
    table.apply(bandit_router.config)
    for rule in bandit_router.config.policies[0].rules:
        for n, target in enumerate(rule.targets):
            for _ in range(20):
                table.reward("auto", rule.name, target.endpoint, 0.9 if n == 0 else 0.4)
    health = BenchHealth()
    weighted_rules = {d.rule for d in (router.decide(f, health) for f in features)}
    bandit_decisions = [bandit_router.decide(f, health, bandits=table) for f in features]
    picked = sum(d.bandit is not None for d in bandit_decisions)
    assert weighted_rules == {d.rule for d in bandit_decisions}
    report("decide, weighted (again)", measure(router, features, rounds))
    report("decide, bandit rules", measure(bandit_router, features, rounds, table))
    print(f"  ({picked} of {len(features)} requests picked by a bandit rule)")
    default = [f for f, d in zip(features, bandit_decisions, strict=True) if d.rule == "default"]
    report("  default rule, weighted", measure(router, default, rounds * 4))
    report("  default rule, bandit", measure(bandit_router, default, rounds * 4, table))


def two_kib_prompts(count: int = 20) -> tuple[list[str], str]:
    """2 KiB prompts for the learned score: real ones (prompts of the shared routing data joined up to
    2 KiB) when the data is beside the clone, else made of a dozen words. The embedding's cost follows
    the prompt's distinct tokens, so the real prompts (~250 distinct of ~500) are the honest figure; the
    dozen-word ones are cheaper."""
    rng = random.Random(3)
    data = next(
        (
            path / "routing-data" / "labeled-prompts.jsonl"
            for path in (REPO.parent / "shared", REPO.parent.parent / "shared")
            if (path / "routing-data" / "labeled-prompts.jsonl").is_file()
        ),
        None,
    )
    if data is not None:
        import json

        with data.open(encoding="utf-8") as lines:  # not splitlines(): prompts hold U+2028 and the like
            texts = [json.loads(line)["prompt"] for line in lines if line.strip()]
        prompts = []
        for _ in range(count):
            text = ""
            while len(text) < 2048:
                text += rng.choice(texts) + " "
            prompts.append(text[:2048])
        return prompts, f"real, from {data}"
    words = ("the", "total", "cost", "of", "12", "apples", "each", "$3", "and", "how", "many", "left")
    return [" ".join(rng.choice(words) for _ in range(400))[:2048] for _ in range(count)], "a dozen words"


def report_learned_cost(features: list[RequestFeatures], rounds: int) -> None:
    """decide() with a semantic rule and a learned-score rule that every request reaches, beside the
    same policy without them; then the learned score alone for a 2 KiB prompt."""
    from modelroute_sidecar.embeddings import embedder, load_models
    from modelroute_sidecar.engine.difficulty import LearnedScorer

    config = build_config(learned=True)
    started = time.perf_counter()
    models = load_models(config)
    load_ms = (time.perf_counter() - started) * 1000
    router = Router(config, local_region="eu-west-1", models=models)
    learned = measure(router, features, rounds)
    report("decide, semantic + learned", learned)
    print(
        f"  (embedding model, builtin head and {sum(map(len, SEMANTIC_EXAMPLES.values()))} examples loaded "
        f"in {load_ms:.0f} ms, once per process and config)"
    )
    scorer = LearnedScorer(models["auto"].heads["builtin"], embedder().embed)
    prompts, source = two_kib_prompts()
    print(f"  (2 KiB prompts: {source})")
    gc.collect()
    gc.disable()
    try:
        alone = time_calls([(lambda p=p: scorer(p, 512)) for p in prompts], max(rounds, 20))
    finally:
        gc.enable()
    report("learned score, 2 KiB prompt", alone)
    # CPU time of the thread: on a shared box the wall clock's p99 is mostly time spent descheduled.
    cpu: list[float] = []
    clock = time.thread_time_ns
    gc.collect()
    gc.disable()
    try:
        for _ in range(max(rounds, 20)):
            for prompt in prompts:
                start = clock()
                scorer(prompt, 512)
                cpu.append((clock() - start) / 1000)
    finally:
        gc.enable()
    report("  same, thread CPU time", cpu)
    p99, cpu_p99 = percentile(alone, 0.99), percentile(cpu, 0.99)
    verdict = "met" if p99 <= 1000 else ("met in CPU time" if cpu_p99 <= 1000 else "NOT met")
    print(f"target learned score p99 <= 1 ms for 2 KiB: {verdict} (wall {p99:.0f} µs, CPU {cpu_p99:.0f} µs)")


DETECTOR_KINDS = ("email", "phone", "card", "iban")


def detector_text(kind: str, size: int) -> str:
    """`size` characters of prose, or of digit-heavy text (order ids, dates, amounts), with no identifier."""
    rng = random.Random(size)
    if kind == "prose":
        words = [
            "the",
            "quick",
            "brown",
            "fox",
            "jumps",
            "over",
            "a",
            "lazy",
            "dog",
            "while",
            "routing",
            "requests",
            "across",
            "regions",
        ]
        parts = [rng.choice(words) for _ in range(size // 4)]
    else:
        parts = [
            rng.choice(
                (
                    f"order {rng.randrange(10**8, 10**9)}",
                    f"{rng.randrange(1, 28):02d}.{rng.randrange(1, 12):02d}.2026",
                    f"EUR {rng.randrange(100, 99999)}.{rng.randrange(0, 99):02d}",
                    f"ref {rng.randrange(10**11, 10**12)}",
                )
            )
            for _ in range(size // 12)
        ]
    return " ".join(parts)[:size]


def report_detector_cost(rounds: int) -> None:
    """All four detectors over 1, 4 and 16 KiB of prose and of digit-heavy text: µs per KiB; then one
    `pattern` detector (RE2) alone over the same text."""
    from modelroute_sidecar.engine.detectors import ContentScan, compile_pattern

    employee_id = compile_pattern(EMPLOYEE_ID)

    for kind in ("prose", "digits"):
        for kib in (1, 4, 16):
            text = detector_text(kind, kib * 1024)

            def scan(t: str = text) -> None:
                found = ContentScan(t)
                for detector in DETECTOR_KINDS:
                    found.finds(detector)

            def match(t: str = text) -> None:
                ContentScan(t).matches("employee-id", employee_id)

            for name, call in (("detectors", scan), ("pattern  ", match)):
                times = time_calls([call], max(rounds, 20))
                per_kib = statistics.median(times) / kib
                print(
                    f"{name}, {kind:6s} {kib:2d} KiB: median {statistics.median(times):7.1f} µs"
                    f" = {per_kib:5.1f} µs/KiB"
                )


if __name__ == "__main__":
    main()
