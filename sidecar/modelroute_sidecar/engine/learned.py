"""What a policy's learned rules need per request, handed to the engine when a config loads: the
embedding function, its difficulty models by name and its semantic index.

The engine never loads a model (that is file I/O: the sidecar's `embeddings` module does it); it is
given a `PolicyModels` per policy that uses learned routing, and `Router` refuses a config whose rules
name a model it was not given. The head document's format (`head_problem`) is checked here too, for
the operator's compiler as for the sidecar. numpy is not imported here, so a config without learned
rules never pays for it (and the operator checks heads without numpy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelroute_contract import HEURISTIC_SCORER, PolicyConfig

if TYPE_CHECKING:
    from .difficulty import DifficultyHead, Embed
    from .semantic import SemanticIndex

HEAD_FORMAT = "modelroute.dev/difficulty-head/v1"
"""The `format` of a head document."""
EMBEDDING = "wordllama/l2_supercat/256"
"""The embedding every head is trained on: WordLlama's default model, shipped inside its wheel."""
EMBEDDING_DIMENSION = 256

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "numbers",
    "distinct_numbers",
    "number_words",
    "operation_words",
    "sentences",
    "questions",
    "decimals",
    "percents",
    "money",
    "fractions",
    "log_max_number",
    "option_lines",
    "log_option_chars",
    "negation",
)
"""The text features, in the order a head's weights read them."""
MAX_WORDS = 1024
"""Words a group's bag of words may hold: scoring intersects the prompt's words with them."""


def head_problem(document: dict[str, Any], dimension: int = EMBEDDING_DIMENSION) -> str | None:
    """Why `document` is not a head this engine scores with (the field and the reason), or None."""
    if document.get("format") != HEAD_FORMAT:
        return f"head.format must be {HEAD_FORMAT!r} (got {document.get('format')!r:.60})"
    if document.get("embedding") != EMBEDDING:
        return f"head.embedding must be {EMBEDDING!r} (got {document.get('embedding')!r:.60})"
    groups = document.get("groups")
    if not isinstance(groups, list) or not groups:
        return "head.groups must be a non-empty list"
    width = len(FEATURE_NAMES) + 2
    try:
        for i, raw in enumerate(groups):
            where = f"head.groups[{i}]"
            if len(raw["centroid"]) != dimension:
                return f"{where}.centroid has {len(raw['centroid'])} values, not {dimension}"
            subjects = raw.get("subjects") or {}
            logits, centroids = subjects.get("logits") or [], subjects.get("centroids") or []
            if len(logits) != len(centroids) or any(len(row) != dimension for row in centroids):
                return f"{where}.subjects: centroids and logits do not match ({dimension} values a centroid)"
            if any(len(pair) != 2 for pair in logits):
                return f"{where}.subjects.logits: two values (weak, strong) a subject"
            for bound in ("featureLow", "featureHigh"):
                if len(raw[bound]) != width:
                    return f"{where}.{bound}: {width} values expected"
            vocabulary = raw.get("words") or []
            if not isinstance(vocabulary, list) or not all(isinstance(word, str) for word in vocabulary):
                return f"{where}.words must be a list of words"
            if len(set(vocabulary)) != len(vocabulary):
                return f"{where}.words: each word once"
            if len(vocabulary) > MAX_WORDS:
                return f"{where}.words: at most {MAX_WORDS} words (got {len(vocabulary)})"
            for tier in ("weakFails", "strongFails"):
                head = raw[tier]
                if len(head["embeddingWeights"]) != dimension or len(head["featureWeights"]) != width:
                    return (
                        f"{where}.{tier}: {dimension} embedding weights and {width} feature weights expected"
                    )
                if len(head.get("wordWeights") or []) != len(vocabulary):
                    return f"{where}.{tier}.wordWeights: one weight a word of .words ({len(vocabulary)})"
                float(head["bias"])
            values = [
                *raw["centroid"],
                *(v for tier in ("weakFails", "strongFails") for v in raw[tier]["embeddingWeights"]),
                *(v for tier in ("weakFails", "strongFails") for v in raw[tier]["featureWeights"]),
                *(v for tier in ("weakFails", "strongFails") for v in raw[tier].get("wordWeights") or []),
                *(v for row in centroids for v in row),
                *(v for pair in logits for v in pair),
                *raw["featureLow"],
                *raw["featureHigh"],
            ]
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                return f"{where}: weights must be finite numbers"
    except (KeyError, TypeError, ValueError) as exc:
        return f"head.groups: malformed ({type(exc).__name__}: {exc})"
    return None


@dataclass(frozen=True)
class PolicyModels:
    """The learned models of one policy."""

    embed: Embed
    heads: Mapping[str, DifficultyHead] = field(default_factory=dict)
    """Difficulty models by the name rules give in `complexityScorer`."""
    semantic: SemanticIndex | None = None


def needs_models(policy: PolicyConfig) -> bool:
    """Whether any rule of `policy` scores with a learned model or matches by meaning."""
    return any(
        rule.match.semantic is not None
        or (rule.match.complexity is not None and rule.match.complexity_scorer not in ("", HEURISTIC_SCORER))
        for rule in policy.rules
    )


def missing_models(policy: PolicyConfig, models: PolicyModels | None) -> str | None:
    """What a policy's rules name that `models` lacks, or None."""
    for i, rule in enumerate(policy.rules):
        scorer = rule.match.complexity_scorer
        learned = rule.match.complexity is not None and scorer not in ("", HEURISTIC_SCORER)
        if learned and (models is None or scorer not in models.heads):
            return f"policy {policy.name} rules[{i}] scores complexity with {scorer!r}, which is not loaded"
        if rule.match.semantic is not None and (models is None or models.semantic is None):
            return f"policy {policy.name} rules[{i}] matches semantic routes, which are not loaded"
    return None
