"""The learned difficulty score: how likely the weak tier is to fail a prompt, on the complexity scale
(0-100), from a sentence embedding and a few text features, through a small trained head.

Pure: the embedding function and the head are handed in when a config loads (the sidecar's
`embeddings` module loads the embedding model; `contract.DifficultyModel` carries the head). Scoring is
a handful of numpy dot products: the prompt's embedding is compared with each group's centroid (a group
is a kind of prompt the head was trained on, e.g. math word problems or multiple-choice exams) and with
each of the group's subject centroids, whose smoothed failure rates give a prior; the group's logistic
heads (one for each tier's failure) then read the embedding, the text features and that prior. numpy
is imported here, so this module is imported only when a config names a learned model.

Text features carry what an averaged word embedding cannot: how many quantities and operations a word
problem chains, how many sentences (reasoning steps) it has, how long it is. A group may also weigh the
presence of its most frequent words (a bag of words over a small vocabulary): on GSM8K, whose averaged
embedding alone ranks prompts little better than chance, single words ("each", "percent", "rest") carry
much of what the embedding blurs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .learned import EMBEDDING, EMBEDDING_DIMENSION, FEATURE_NAMES, HEAD_FORMAT, head_problem

__all__ = ["EMBEDDING", "EMBEDDING_DIMENSION", "FEATURE_NAMES", "HEAD_FORMAT", "head_problem"]

Vector = npt.NDArray[np.float32]
Embed = Callable[[str], Vector]
"""A prompt to its unit-length embedding (the sidecar's `embeddings.Embedder.embed`)."""


TEXT_WINDOW = 4000
"""Characters, from the end of the prompt, that features and the embedding read: the latest content is
what the model must answer, and the cost stays bounded for long prompts (whose size still counts)."""

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NUMBER_WORDS = _words(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
    "hundred thousand million dozen half twice triple double third quarter fourth fifth"
)
_OPERATION_WORDS = _words(
    "per each every times total remaining left more less fewer than percent ratio average sum "
    "difference twice half split share profit cost costs spend spent earn earns earned save saves "
    "saved increase decrease discount rate faster slower longer shorter older younger after before"
)
# The words of a lower-cased text are its runs of a-z (what `re.findall("[a-z]+")` finds). In its
# UTF-8 every byte of a non-ASCII character is >= 0x80, so mapping each byte that is not a-z to a
# space and splitting gives the same runs, ~3x faster than the regex on a 2 KiB prompt (the
# largest part of `text_signals`; tests/unit/engine/test_engine_learned.py checks it on hostile text).
_LETTERS_ONLY = bytes(c if 0x61 <= c <= 0x7A else 0x20 for c in range(256))
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_FRACTION = re.compile(r"\d/\d")


def text_features(prompt: str) -> list[float]:
    """The text features of `prompt` (`FEATURE_NAMES`), counts log-scaled so one long prompt does not
    dominate the head."""
    return text_signals(prompt)[0]


def prompt_words(prompt: str) -> frozenset[str]:
    """The distinct lower-case words of `prompt`'s window: what a group's bag of words reads."""
    return text_signals(prompt)[1]


def text_signals(prompt: str) -> tuple[list[float], frozenset[str]]:
    """The text features of `prompt` and its distinct words, from one pass over its window (a request
    needs both, and splitting the words is most of the cost)."""
    text = prompt[-TEXT_WINDOW:]
    lower = text.lower()
    numbers = _NUMBER.findall(text)
    words = lower.encode("utf-8", "surrogatepass").translate(_LETTERS_ONLY).decode("ascii").split()
    word_set = frozenset(words)
    values = []
    for number in numbers:
        try:
            values.append(float(number.replace(",", "")))
        except ValueError:
            continue
    option_lines = [
        line for line in text.split("\n") if len(line) > 2 and line[1] == "." and line[0] in "ABCD"
    ]
    features = [
        math.log1p(len(prompt)),
        math.log1p(len(words)),
        math.log1p(len(numbers)),
        math.log1p(len(set(numbers))),
        math.log1p(sum(map(_NUMBER_WORDS.__contains__, words))),
        math.log1p(sum(map(_OPERATION_WORDS.__contains__, words))),
        math.log1p(len(_SENTENCE_END.findall(text))),
        math.log1p(text.count("?")),
        float(any("." in number for number in numbers)),
        float("%" in text or "percent" in word_set),
        float("$" in text),
        # A regex that opens with \d tries every position (~25 µs for 2 KiB); most prompts have no '/'.
        float("/" in text and _FRACTION.search(text) is not None),
        math.log10(1.0 + max(values, default=0.0)),
        float(len(option_lines)),
        math.log1p(sum(len(line) for line in option_lines)),
        float(" not " in lower or "except" in word_set or "false" in word_set),
    ]
    return features, word_set


@dataclass(frozen=True)
class Tier:
    """One logistic head: the log-odds that one tier fails the prompt."""

    embedding_weights: npt.NDArray[np.float64]
    feature_weights: npt.NDArray[np.float64]
    """Over the text features then the two subject priors."""
    bias: float

    def probability(self, vector: Vector, extra: npt.NDArray[np.float64], words: float = 0.0) -> float:
        """`words`: the summed weights of the group's words the prompt has (this tier's)."""
        logit = float(self.embedding_weights @ vector) + float(self.feature_weights @ extra)
        logit += self.bias + words
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))


@dataclass(frozen=True)
class Group:
    """The heads of one kind of prompt: prompts nearest this group's centroid are scored by it."""

    name: str
    centroid: Vector
    subject_centroids: npt.NDArray[np.float64]
    """One unit row per subject seen in training (may be empty)."""
    subject_logits: npt.NDArray[np.float64]
    """Per subject, the smoothed failure log-odds of (weak, strong)."""
    temperature: float
    """Softmax temperature over subject similarities."""
    low: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    """Range of the text features and priors in training: scoring clips to it."""
    weak: Tier
    strong: Tier
    words: dict[str, tuple[float, float]]
    """The bag of words: per vocabulary word, its (weak, strong) weight when the prompt has it (may be
    empty: heads trained before it, or groups trained without one)."""

    def prior(self, vector: Vector) -> npt.NDArray[np.float64]:
        """The subject prior: failure log-odds (weak, strong) of the subjects the prompt resembles."""
        if not len(self.subject_logits):
            return np.zeros(2)
        sims = self.subject_centroids @ vector / self.temperature
        weights = np.exp(sims - sims.max())
        return np.asarray(weights @ self.subject_logits / weights.sum(), dtype=np.float64)

    def gain(self, vector: Vector, features: Sequence[float], words: AbstractSet[str] = frozenset()) -> float:
        """P(weak fails) - P(strong fails): what sending the prompt to the strong tier is expected to add."""
        extra = np.clip(
            np.concatenate([np.asarray(features, dtype=np.float64), self.prior(vector)]), self.low, self.high
        )
        weak = strong = 0.0
        table = self.words
        if table:
            # The prompt's words are iterated in C by the intersection; only the few the vocabulary has
            # are looked up.
            for word in table.keys() & words:
                pair = table[word]
                weak += pair[0]
                strong += pair[1]
        return self.weak.probability(vector, extra, weak) - self.strong.probability(vector, extra, strong)


@dataclass(frozen=True)
class DifficultyHead:
    """A trained head: its groups, each with its centroid and two logistic heads."""

    name: str
    version: str
    groups: tuple[Group, ...]
    centroids: npt.NDArray[np.float64]
    """The groups' centroids stacked, to pick the nearest in one product."""

    def group_of(self, vector: Vector) -> Group:
        """The group whose centroid is nearest (cosine) to the prompt."""
        return self.groups[int(np.argmax(self.centroids @ vector))]

    def gain(self, vector: Vector, features: Sequence[float], words: AbstractSet[str] = frozenset()) -> float:
        """The expected accuracy the strong tier adds on this prompt (-1..1); `words` are the prompt's
        (`prompt_words`), read by groups with a bag of words."""
        return self.group_of(vector).gain(vector, features, words)


def _tier(raw: dict[str, Any]) -> Tier:
    return Tier(
        embedding_weights=np.asarray(raw["embeddingWeights"], dtype=np.float64),
        feature_weights=np.asarray(raw["featureWeights"], dtype=np.float64),
        bias=float(raw["bias"]),
    )


def _words_of(raw: dict[str, Any]) -> dict[str, tuple[float, float]]:
    vocabulary = raw.get("words") or []
    if not vocabulary:
        return {}
    weak, strong = raw["weakFails"]["wordWeights"], raw["strongFails"]["wordWeights"]
    return {str(word): (float(w), float(s)) for word, w, s in zip(vocabulary, weak, strong, strict=True)}


def head_from_document(document: dict[str, Any]) -> DifficultyHead:
    """A head from its JSON document (`modelroute router train` writes it); ValueError naming the field
    when it is not one."""
    problem = head_problem(document)
    if problem:
        raise ValueError(problem)
    groups = []
    for raw in document["groups"]:
        subjects = raw.get("subjects") or {}
        logits = subjects.get("logits") or []
        groups.append(
            Group(
                name=str(raw["name"]),
                centroid=np.asarray(raw["centroid"], dtype=np.float64),
                subject_centroids=np.asarray(subjects.get("centroids") or [], dtype=np.float64).reshape(
                    len(logits), -1
                )
                if logits
                else np.zeros((0, 0)),
                subject_logits=np.asarray(logits, dtype=np.float64).reshape(-1, 2)
                if logits
                else np.zeros((0, 2)),
                temperature=float(subjects.get("temperature") or 1.0),
                low=np.asarray(raw["featureLow"], dtype=np.float64),
                high=np.asarray(raw["featureHigh"], dtype=np.float64),
                weak=_tier(raw["weakFails"]),
                strong=_tier(raw["strongFails"]),
                words=_words_of(raw),
            )
        )
    return DifficultyHead(
        name=str(document["name"]),
        version=str(document["version"]),
        groups=tuple(groups),
        centroids=np.stack([group.centroid for group in groups]),
    )


class LearnedScorer:
    """A prompt to its 0-100 difficulty: 100 x (P(weak tier fails) - P(strong tier fails)), at least 0.

    The probability that the weak tier fails a prompt the strong one answers, net of the reverse: 0 for
    prompts the strong tier would not answer better (easy ones, and hopeless ones), 100 for a prompt the
    weak tier surely fails and the strong one surely answers."""

    __slots__ = ("embed", "head")

    def __init__(self, head: DifficultyHead, embed: Embed) -> None:
        self.head = head
        self.embed = embed

    def gain(self, prompt: str) -> float:
        """The unrounded expected gain (what the evaluation ranks by)."""
        features, words = text_signals(prompt)
        return self.head.gain(self.embed(prompt[-TEXT_WINDOW:]), features, words)

    def __call__(self, prompt: str, _prompt_tokens: int) -> int:
        return max(0, min(100, round(100 * self.gain(prompt))))
