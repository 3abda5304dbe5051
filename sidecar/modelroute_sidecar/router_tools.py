"""`modelroute router train` and `modelroute router eval`: a difficulty head from labeled prompts, and
its figures beside the heuristic's and a random router's.

The data format (JSON lines; build it from your own logs and quality feedback), one prompt a line:

    {"benchmark": "support", "subject": "billing", "prompt": "...",
     "weak_correct": true, "strong_correct": true}

- `benchmark`: the kind of prompt (a group: one head each, at least 20 prompts; the sidecar sends a
  prompt to the head of the nearest group). `subject` (optional): a finer topic, whose failure rate
  becomes a prior. `prompt`: the text as the router sees it (the concatenated messages).
- `weak_correct` / `strong_correct`: whether the cheap and the strong tier answered it acceptably
  (graded answers, user feedback, an LLM judge). Both are needed: the score is what the strong tier adds.
- Other keys (`id`, ...) are ignored. `../shared/routing-data/labeled-prompts.jsonl` is in this format.

The embedding is the sidecar's own (`embeddings.Embedder`), so the figures are those of what runs.
This module lives with the sidecar because it needs that embedder; the operator's CLI imports it only
for these two commands.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from modelroute_contract import BUILTIN_DIFFICULTY_MODEL
from modelroute_contract.schemas import canonical_json

from .engine.complexity import score_complexity

HEAD_FILE = "head.json"
"""The head document in a model directory (the key to put in the ConfigMap)."""
MODEL_FILE = "model.json"
"""name, version and sha256 of the head, as a policy's `difficultyModels` entry names them."""
_REQUIRED = {"benchmark": str, "prompt": str, "weak_correct": bool, "strong_correct": bool}


def read_labeled(path: str | Path) -> list[dict[str, Any]]:
    """The labeled prompts of a JSON-lines file; ValueError naming the line and field at fault."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: a line must be a JSON object")
            for key, kind in _REQUIRED.items():
                if not isinstance(row.get(key), kind):
                    raise ValueError(f"{path}:{number}: {key} must be a {kind.__name__}")
            if not isinstance(row.get("subject", ""), str):
                raise ValueError(f"{path}:{number}: subject must be a string")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no labeled prompts")
    return rows


def examples_of(rows: Sequence[dict[str, Any]]) -> list[Any]:
    """`training.Example`s of labeled rows, embedded by the sidecar's embedder."""
    from .embeddings import embedder
    from .engine.difficulty import TEXT_WINDOW, text_signals
    from .engine.training import Example

    embed = embedder().embed
    examples = []
    for row in rows:
        features, words = text_signals(row["prompt"])
        examples.append(
            Example(
                group=row["benchmark"],
                subject=row.get("subject") or "",
                vector=embed(row["prompt"][-TEXT_WINDOW:]),
                features=features,
                weak_correct=row["weak_correct"],
                strong_correct=row["strong_correct"],
                words=words,
            )
        )
    return examples


def split(
    rows: Sequence[dict[str, Any]], holdout: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held aside): a seeded shuffle per benchmark, `holdout` of each set aside."""
    train, held = [], []
    by_benchmark: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_benchmark.setdefault(row["benchmark"], []).append(row)
    for name in sorted(by_benchmark):
        members = list(by_benchmark[name])
        random.Random(f"{seed}:{name}").shuffle(members)
        cut = round(len(members) * holdout)
        held.extend(members[:cut])
        train.extend(members[cut:])
    return train, held


def train_head(rows: Sequence[dict[str, Any]], name: str, version: str) -> dict[str, Any]:
    """A head document trained on `rows`."""
    from .engine.training import train

    return train(examples_of(rows), name=name, version=version)


def write_model(document: dict[str, Any], out: str | Path) -> dict[str, str]:
    """Write `head.json` and `model.json` into `out`; returns the model's name, version and sha256."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    text = canonical_json(document)
    (directory / HEAD_FILE).write_text(text)
    entry = {
        "name": str(document["name"]),
        "version": str(document["version"]),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    (directory / MODEL_FILE).write_text(json.dumps(entry, indent=2) + "\n")
    return entry


def load_head_document(model: str) -> dict[str, Any]:
    """The head document of `model`: a directory `train` wrote, or `builtin`."""
    if model == BUILTIN_DIFFICULTY_MODEL:
        from .embeddings import builtin_document

        return builtin_document()
    path = Path(model) / HEAD_FILE
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def learned_scores(rows: Sequence[dict[str, Any]], document: dict[str, Any]) -> list[float]:
    """The unrounded learned score (expected gain of the strong tier) of each row."""
    from .engine.difficulty import head_from_document

    head = head_from_document(document)
    return [head.gain(example.vector, example.features, example.words) for example in examples_of(rows)]


def heuristic_scores(rows: Sequence[dict[str, Any]]) -> list[float]:
    """The heuristic complexity score of each row (its token estimate as the sidecar makes it: ~4 bytes
    a token)."""
    return [float(score_complexity(row["prompt"], max(1, len(row["prompt"].encode()) // 4))) for row in rows]


def evaluate(rows: Sequence[dict[str, Any]], document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per router (learned, heuristic, random) the figures of each benchmark, then of all prompts."""
    from .engine.routing_eval import figures, random_figures

    scores = {"learned": learned_scores(rows, document), "heuristic": heuristic_scores(rows)}
    benchmarks = sorted({row["benchmark"] for row in rows})
    groups = [(name, [i for i, row in enumerate(rows) if row["benchmark"] == name]) for name in benchmarks]
    groups.append(("all", list(range(len(rows)))))
    results = []
    for router in ("learned", "heuristic", "random"):
        for name, members in groups:
            weak = [rows[i]["weak_correct"] for i in members]
            strong = [rows[i]["strong_correct"] for i in members]
            if router == "random":
                result = random_figures(name, weak, strong)
            else:
                result = figures(name, [scores[router][i] for i in members], weak, strong)
            results.append({"router": router, **result})
    return results


def print_lines(results: Iterable[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    """One JSON object a line."""
    for result in results:
        out.write(json.dumps(result) + "\n")
