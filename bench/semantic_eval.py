"""Semantic routes measured: route MMLU prompts to their subject's category (STEM, humanities, social
sciences, other) from a handful of example prompts per category, beside a keyword router.

    .venv/bin/python -m bench.semantic_eval [--examples 16] [--seeds 0 1 2]

Per seed, `--examples` prompts of each category are drawn as the route's example utterances; every
other MMLU prompt is routed by the engine's `SemanticIndex` (the route whose examples' centroid is
nearest wins) with the sidecar's embedder, and by a keyword router (hand-written words per category,
the most hits wins, no hit: `other`). Prints accuracy and the cost of one decision (embedding
included). Categories are those of the MMLU paper (hendrycks/test `categories.py`).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time

from modelroute_contract import SemanticRoute
from modelroute_sidecar import router_tools
from modelroute_sidecar.embeddings import embedder
from modelroute_sidecar.engine.semantic import build_semantic_index

from .router_eval import DEFAULT_DATA

_GROUPS = {
    "stem": "abstract_algebra astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history "
    "high_school_world_history "
    "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
    "prehistory "
    "professional_law world_religions",
    "social-sciences": "econometrics high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
    "professional_psychology public_relations security_studies sociology us_foreign_policy",
    "other": "anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging "
    "management "
    "marketing medical_genetics miscellaneous nutrition professional_accounting professional_medicine "
    "virology",
}
CATEGORY = {subject: category for category, subjects in _GROUPS.items() for subject in subjects.split()}

KEYWORDS = {
    "stem": "equation calculate compute function integer matrix physics energy velocity chemical reaction "
    "molecule cell dna algorithm computer program probability theorem polynomial electron force",
    "humanities": "philosophy moral ethics history century war king law court legal argument religion god "
    "kant plato fallacy statute defendant plaintiff empire",
    "social-sciences": "economy economic market price inflation gdp government policy political society "
    "social psychology behavior demand supply unemployment election culture",
    "other": "patient disease medical health treatment symptoms business company marketing management "
    "accounting nutrition virus drug clinical hospital",
}
_WORD = re.compile(r"[a-z]+")
_KEYWORD_SETS = {category: frozenset(words.split()) for category, words in KEYWORDS.items()}


def keyword_route(prompt: str) -> str:
    words = _WORD.findall(prompt.lower())
    hits = {category: sum(w in keys for w in words) for category, keys in _KEYWORD_SETS.items()}
    best = max(hits, key=lambda c: hits[c])
    return best if hits[best] else "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--examples", type=int, default=16, help="example prompts per category")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = [r for r in router_tools.read_labeled(args.data) if r["benchmark"] == "mmlu"]
    embed = embedder().embed
    semantic_acc, keyword_acc, semantic_us, keyword_us = [], [], [], []
    for seed in args.seeds:
        rng = random.Random(seed)
        by_category: dict[str, list[dict[str, object]]] = {c: [] for c in _GROUPS}
        for row in rows:
            by_category[CATEGORY[str(row["subject"])]].append(row)
        chosen = {c: rng.sample(members, args.examples) for c, members in by_category.items()}
        ids = {id(r) for members in chosen.values() for r in members}
        routes = [
            SemanticRoute(name=c, examples=tuple(str(r["prompt"]) for r in m)) for c, m in chosen.items()
        ]
        index = build_semantic_index(routes, embed)
        tests = [r for r in rows if id(r) not in ids]
        hits_semantic = hits_keyword = 0
        started = time.perf_counter()
        for row in tests:
            hits_semantic += index.best(embed(str(row["prompt"])[-4000:]))[0] == CATEGORY[str(row["subject"])]
        semantic_us.append((time.perf_counter() - started) / len(tests) * 1e6)
        started = time.perf_counter()
        for row in tests:
            hits_keyword += keyword_route(str(row["prompt"])) == CATEGORY[str(row["subject"])]
        keyword_us.append((time.perf_counter() - started) / len(tests) * 1e6)
        semantic_acc.append(hits_semantic / len(tests))
        keyword_acc.append(hits_keyword / len(tests))
    n = len(rows) - 4 * args.examples
    print(f"MMLU prompts routed: {n} per seed, {args.examples} examples per category, seeds {args.seeds}")
    print("| router | accuracy (mean, min-max over seeds) | cost per decision |")
    print("|---|---|---|")
    print(
        f"| semantic routes ({args.examples} examples a route) | {statistics.mean(semantic_acc):.1%} "
        f"({min(semantic_acc):.1%}-{max(semantic_acc):.1%}) | {statistics.mean(semantic_us):.0f} µs |"
    )
    print(
        f"| keywords ({sum(map(len, _KEYWORD_SETS.values()))} words) | {statistics.mean(keyword_acc):.1%} "
        f"({min(keyword_acc):.1%}-{max(keyword_acc):.1%}) | {statistics.mean(keyword_us):.0f} µs |"
    )
    print(f"| always the largest category | {max(len(v) for v in _by(rows).values()) / len(rows):.1%} | - |")
    return 0


def _by(rows: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        out.setdefault(CATEGORY[str(row["subject"])], []).append(row)
    return out


if __name__ == "__main__":
    sys.exit(main())
