"""How good a difficulty router is on labeled prompts: the figures of RouteLLM's evaluation.

A router scores each prompt; a threshold sends the highest-scoring share of prompts to the strong model
and the rest to the weak one. Sweeping the threshold over every share 0..n gives the accuracy as a
function of the strong-call share. From that curve:

- `strong_share_at_95`: the smallest strong-call share whose accuracy reaches 95% of the strong model's;
- `apgr`: the mean, over the n+1 shares, of (accuracy - weak) / (strong - weak);
- `cpt50` / `cpt80`: the smallest share recovering 50% / 80% of that gap.

Ties in the score keep the prompts' order (a stable sort), so a router with few distinct scores is not
flattered by a lucky order. The random router is its expectation (accuracy linear in the share), not one
draw. Pure numpy; the `modelroute router eval` command and `bench/router_eval.py` print these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def figures(
    benchmark: str, scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]
) -> dict[str, object]:
    """The figures of one router on one set of prompts (keys as `modelroute router eval` prints them)."""
    n = len(scores)
    if n == 0:
        raise ValueError(f"benchmark {benchmark}: no prompts")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    weak_ok = np.asarray(weak, dtype=np.float64)[order]
    strong_ok = np.asarray(strong, dtype=np.float64)[order]
    # accuracy[k]: the top k prompts go to the strong model, the rest to the weak one.
    gain = np.concatenate([[0.0], np.cumsum(strong_ok - weak_ok)])
    accuracy = (weak_ok.sum() + gain) / n
    return _summary(benchmark, n, accuracy, weak_ok.mean(), strong_ok.mean())


def random_figures(benchmark: str, weak: Sequence[bool], strong: Sequence[bool]) -> dict[str, object]:
    """The expected figures of a router that picks the strong model at random."""
    n = len(weak)
    weak_acc, strong_acc = float(np.mean(weak)), float(np.mean(strong))
    shares = np.arange(n + 1) / n
    return _summary(benchmark, n, weak_acc + shares * (strong_acc - weak_acc), weak_acc, strong_acc)


def _summary(
    benchmark: str, n: int, accuracy: np.ndarray, weak_acc: float, strong_acc: float
) -> dict[str, object]:
    shares = np.arange(n + 1) / n
    gap = strong_acc - weak_acc
    pgr = (accuracy - weak_acc) / gap if gap > 0 else np.ones_like(accuracy)

    def first_share(reached: np.ndarray) -> float:
        hits = np.flatnonzero(reached)
        return round(float(shares[hits[0]]), 4) if len(hits) else 1.0

    return {
        "benchmark": benchmark,
        "prompts": n,
        "strong_share_at_95": first_share(accuracy >= 0.95 * strong_acc - 1e-12),
        "apgr": round(float(pgr.mean()), 4),
        "cpt50": first_share(pgr >= 0.5 - 1e-12),
        "cpt80": first_share(pgr >= 0.8 - 1e-12),
        "weak_accuracy": round(weak_acc, 4),
        "strong_accuracy": round(strong_acc, 4),
    }
