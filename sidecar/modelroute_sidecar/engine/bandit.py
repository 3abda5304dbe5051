"""The bandit strategy: Thompson sampling over a rule's targets, the pure choice of its first pick.

A rule with `strategy: bandit` treats each target endpoint as an arm with a Beta(alpha, beta) posterior
(the sidecar's `modelroute_sidecar.bandit.BanditTable` keeps them, fed by quality feedback scores and by
failed attempts, which count as reward 0). Per request the engine:

1. takes the arms that every hard filter kept: only endpoints with a replica among the best-ranked targets
   left after residency, active health, capabilities, passive ejection, budgets and the canary split (the
   same candidates the weighted pick would choose among), so nothing is traded for reward;
2. with probability `explore` x n (n arms; the floor is at most 1/n) picks an arm uniformly, so every arm
   keeps at least `explore` of the picks and one with bad luck is tried again;
3. otherwise draws one sample per arm from its posterior and scores it `sample - costWeight x cost`
   (cost: the endpoint's price per token relative to the rule's dearest target, 0-1, fixed per config);
   the best score wins, ties to the stored (locality, then name) order;
4. within the chosen endpoint, its best-ranked replicas split by replica weight, as the weighted pick does.

Target weights are the weighted strategy's; the bandit ignores them (a weight of 0 still excludes, it
drops the target before any of this). The rest of the plan (retries, fallbacks) keeps its stored order.

A canary on the rule wins: when the request is on the candidate side and the candidate is available, the
candidate goes first, so the canary's share (and its analysis) is what its step says; on the stable side
the bandit picks among what the split left. The random source is the decision's (seeded in tests).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from modelroute_contract import BanditSettings

from .candidates import Candidate, EndpointTraits

PickMode = Literal["sampled", "explored", "canary", "single", "affinity"]
"""How the arm was chosen: the best sampled score, an exploration pick, the canary's candidate side, the
only arm left, or a session's pin (the rule's affinity kept the conversation on its replica)."""


@dataclass(frozen=True, slots=True)
class Posterior:
    """One arm's Beta posterior: `alpha` = 1 + the reward seen, `beta` = 1 + the shortfall seen."""

    alpha: float = 1.0
    beta: float = 1.0
    pulls: int = 0
    """How often the arm was picked first (for `/stats`; not part of the posterior)."""


PRIOR = Posterior()
"""An arm nothing is known of: Beta(1, 1), uniform."""


class BanditView(Protocol):
    """The sidecar's posteriors (one table per worker)."""

    def arms(self, policy: str, rule: str) -> Mapping[str, Posterior]:
        """Posteriors of a rule's arms by endpoint; an endpoint left out is at the prior."""
        ...


@dataclass(frozen=True, slots=True)
class BanditPlan:
    """A bandit rule, as the engine reads it (built once per config by `index`)."""

    policy: str
    rule: str
    settings: BanditSettings
    costs: Mapping[str, float]
    """Each target endpoint's price relative to the rule's dearest target (0-1; all 0 without prices)."""

    @classmethod
    def build(
        cls,
        policy: str,
        rule: str,
        settings: BanditSettings,
        targets: Sequence[str],
        traits: Mapping[str, EndpointTraits],
    ) -> BanditPlan:
        """The rule's plan over its target endpoints (canary endpoints included); an endpoint's price is
        its input plus output price per million tokens."""
        prices = {
            name: traits[name].input_per_million + traits[name].output_per_million
            for name in targets
            if name in traits
        }
        dearest = max(prices.values(), default=0.0)
        costs = {name: (price / dearest if dearest > 0 else 0.0) for name, price in prices.items()}
        return cls(policy, rule, settings, costs)


@dataclass(frozen=True, slots=True)
class BanditPick:
    """What the bandit chose for one request: the arm, how, and the arm's sampled reward."""

    endpoint: str
    mode: PickMode
    sampled: float | None = None
    """The chosen arm's posterior sample (before the cost penalty); None when nothing was sampled."""
    score: float | None = None
    """`sampled - costWeight x cost`, the figure arms were compared by."""

    def header(self) -> str:
        """The `x-modelroute-strategy` value, e.g. `bandit; arm=llama; sampled=0.7312`."""
        value = f"bandit; arm={self.endpoint}; {self.mode}"
        if self.sampled is not None:
            value = f"bandit; arm={self.endpoint}; sampled={self.sampled:.4f}"
            if self.mode != "sampled":
                value += f"; {self.mode}"
        return value


def floor(explore: float, arms: int) -> float:
    """The share of picks each of `arms` arms is sure to get: `explore`, at most 1/arms."""
    return min(explore, 1.0 / arms) if arms else 0.0


def choose_arm(
    arms: Sequence[str],
    posteriors: Mapping[str, Posterior],
    plan: BanditPlan,
    rng: random.Random,
) -> BanditPick:
    """Thompson sampling over `arms` (eligible endpoints, in stored order) with the exploration floor."""
    count = len(arms)
    if count == 1:
        return BanditPick(arms[0], "single")
    settings = plan.settings
    if rng.random() < floor(settings.explore, count) * count:
        chosen = arms[rng.randrange(count)]
        posterior = posteriors.get(chosen, PRIOR)
        return BanditPick(chosen, "explored", rng.betavariate(posterior.alpha, posterior.beta))
    best = ""
    best_sample = best_score = float("-inf")
    weight = settings.cost_weight
    for arm in arms:
        posterior = posteriors.get(arm, PRIOR)
        sample = rng.betavariate(posterior.alpha, posterior.beta)
        score = sample - weight * plan.costs.get(arm, 0.0) if weight else sample
        if score > best_score:
            best, best_sample, best_score = arm, sample, score
    return BanditPick(best, "sampled", round(best_sample, 6), round(best_score, 6))


def pick_bandit(
    primary: Sequence[Candidate],
    plan: BanditPlan,
    posteriors: Mapping[str, Posterior],
    rng: random.Random,
    canary_candidate: str = "",
) -> tuple[int, BanditPick]:
    """Index in `primary` (sorted by `scorers.sort_key`, not empty) of the first pick, and the pick.
    `canary_candidate`: the canary's candidate endpoint when the request is on its candidate side."""
    best = primary[0].rank
    end = 1
    while end < len(primary) and primary[end].rank == best:
        end += 1
    arms: list[str] = []
    for candidate in primary[:end]:
        if candidate.endpoint.name not in arms:
            arms.append(candidate.endpoint.name)
    if canary_candidate and canary_candidate in arms:
        pick = BanditPick(canary_candidate, "canary")
    else:
        pick = choose_arm(arms, posteriors, plan, rng)
    members = [i for i in range(end) if primary[i].endpoint.name == pick.endpoint]
    if len(members) == 1:
        return members[0], pick
    total = 0
    for i in members:
        total += primary[i].replica_weight
    point = rng.random() * total
    for i in members:
        point -= primary[i].replica_weight
        if point < 0:
            return i, pick
    return members[-1], pick
