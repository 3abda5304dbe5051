"""The bandit posteriors of one worker: a Beta posterior per (policy, rule, endpoint) of every bandit rule.

The engine reads them (`engine.bandit.BanditView`) and samples; this table is written off the client's
latency: by `POST /v1/feedback` (a score s adds s to alpha and 1 - s to beta) and by the accounting of a
finished request (each failed attempt on one of the rule's targets adds 1 to beta; a pick adds a pull).

Bounded by the config: only the rules whose strategy is `bandit` in the applied config have arms, and only
their target endpoints (canary endpoints included). A config that changes a rule's targets (or drops the
rule, or its strategy) resets that rule's arms, so what was learned about one set of targets is never read
as evidence about another; a config that keeps them keeps what was learned. Each worker learns from the
requests and feedback it sees (a multi-worker sidecar's `/stats` sums the evidence of its workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from modelroute_contract import RouterConfig

from .engine.bandit import PRIOR, Posterior

if TYPE_CHECKING:
    from modelroute_contract.stats import BanditArmFigures

RuleKey = tuple[str, str]
"""(policy, rule)."""

NOT_FAILURES = frozenset({"ok", "upstream-4xx", "endpoint-rate-limited", "pending"})
"""Attempt outcomes that say nothing against the endpoint: answered, the request's own fault, our own
endpoint limit, or cancelled before an answer."""


class BanditTable:
    """Posteriors of the bandit rules of the applied config, by (policy, rule) then endpoint."""

    def __init__(self) -> None:
        self._targets: dict[RuleKey, tuple[str, ...]] = {}
        self._arms: dict[RuleKey, dict[str, Posterior]] = {}

    def apply(self, config: RouterConfig) -> None:
        """Track the bandit rules of a newly applied config: a rule whose targets changed starts over."""
        targets: dict[RuleKey, tuple[str, ...]] = {}
        for policy in config.policies:
            for rule in policy.rules:
                if rule.strategy != "bandit":
                    continue
                names = [t.endpoint for t in rule.targets if t.weight > 0]
                if rule.canary is not None:
                    names += [rule.canary.stable, rule.canary.candidate]
                targets[(policy.name, rule.name)] = tuple(sorted(set(names)))
        for key in list(self._arms):
            if targets.get(key) != self._targets.get(key):
                del self._arms[key]
        self._targets = targets
        for key in targets:
            self._arms.setdefault(key, {})

    def arms(self, policy: str, rule: str) -> Mapping[str, Posterior]:
        """A rule's posteriors by endpoint (an endpoint not yet seen is at the prior)."""
        return self._arms.get((policy, rule)) or {}

    def _update(
        self, policy: str, rule: str, endpoint: str, reward: float, shortfall: float, pulls: int
    ) -> None:
        key = (policy, rule)
        arms = self._arms.get(key)
        if arms is None or endpoint not in self._targets[key]:
            return  # not a bandit rule of this config, or not one of its arms: nothing to learn
        old = arms.get(endpoint, PRIOR)
        arms[endpoint] = Posterior(old.alpha + reward, old.beta + shortfall, old.pulls + pulls)

    def reward(self, policy: str, rule: str, endpoint: str, score: float) -> None:
        """A quality feedback score (0-1) for a request the rule sent to the endpoint."""
        self._update(policy, rule, endpoint, score, 1.0 - score, 0)

    def failed(self, policy: str, rule: str, endpoint: str) -> None:
        """A failed attempt on the endpoint for a request of the rule: reward 0."""
        self._update(policy, rule, endpoint, 0.0, 1.0, 0)

    def pulled(self, policy: str, rule: str, endpoint: str) -> None:
        """The endpoint was the rule's first pick for a request."""
        self._update(policy, rule, endpoint, 0.0, 0.0, 1)

    def series(self) -> tuple[dict[tuple[str, ...], float], ...]:
        """(pulls, reward, shortfall) by (policy, rule, endpoint), for the metrics."""
        pulls: dict[tuple[str, ...], float] = {}
        reward: dict[tuple[str, ...], float] = {}
        shortfall: dict[tuple[str, ...], float] = {}
        for (policy, rule), arms in self._arms.items():
            for endpoint, arm in arms.items():
                key = (policy, rule, endpoint)
                pulls[key] = arm.pulls
                reward[key] = arm.alpha - PRIOR.alpha
                shortfall[key] = arm.beta - PRIOR.beta
        return pulls, reward, shortfall

    def figures(self) -> list[BanditArmFigures]:
        """Every arm of every bandit rule (the prior for those not yet seen), sorted, for `/stats`."""
        from modelroute_contract.stats import BanditArmFigures  # only /stats needs the models

        out = []
        for (policy, rule), names in sorted(self._targets.items()):
            arms = self._arms.get((policy, rule), {})
            for name in names:
                arm = arms.get(name, PRIOR)
                out.append(
                    BanditArmFigures(
                        policy=policy,
                        rule=rule,
                        endpoint=name,
                        alpha=round(arm.alpha, 6),
                        beta=round(arm.beta, 6),
                        pulls=arm.pulls,
                    )
                )
        return out


def merge_arms(documents: Iterable[BanditArmFigures]) -> list[BanditArmFigures]:
    """Sum the evidence of several workers' arms: alpha and beta above the prior, and the pulls."""
    from modelroute_contract.stats import BanditArmFigures

    merged: dict[tuple[str, str, str], list[float]] = {}
    for doc in documents:
        entry = merged.setdefault((doc.policy, doc.rule, doc.endpoint), [PRIOR.alpha, PRIOR.beta, 0])
        entry[0] += doc.alpha - PRIOR.alpha
        entry[1] += doc.beta - PRIOR.beta
        entry[2] += doc.pulls
    return [
        BanditArmFigures(policy=p, rule=r, endpoint=e, alpha=round(a, 6), beta=round(b, 6), pulls=int(n))
        for (p, r, e), (a, b, n) in sorted(merged.items())
    ]
