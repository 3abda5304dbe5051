"""The complexity score: a cheap 0-100 guess at how hard a prompt is, for rules that send hard prompts to a
stronger model and easy ones to a cheaper one.

A heuristic, not a classifier. It must be deterministic (the same prompt always routes the same way) and
cheap (it runs on every request, inside a ~50 µs decision budget), so every cue is a C-speed string
operation: substring tests, character counts on the UTF-8 bytes, one set intersection for the words, and
regexes that start with a literal character. Four groups of cues add up, each group capped:

- length, max 25: 5 points per doubling of the prompt token estimate above 32 (64 → 5, 128 → 10, …,
  1024 and up → 25);
- code, max 25: a ``` fence (15); 1 point per 2 code symbols among `{ } ; < > [ ] & |` (max 10);
- math, max 20: an equation such as `x = 3` or `2^8` (6); a caret, a LaTeX command or a math symbol such
  as `∑ ∫ √ ≤ ≠ π` (4); each distinct math word such as `integral`, `theorem`, `matrix` (3, max 10);
- multi-step, max 30: "step by step" (10); two or more numbered list items (8); "first" with
  "then"/"next"/"finally" (6); each distinct reasoning word such as `prove`, `analyze`, `compare`,
  `why`, `trade-off` (4, max 12).

Character cues read the last `WINDOW` characters and word cues the last `WORD_WINDOW`: the latest content
is what the model must answer, and the cost stays bounded for long (retrieval-augmented) prompts, whose
size still counts through the token estimate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .learned import PolicyModels

WINDOW = 2000
"""Characters, from the end of the prompt, read for character cues (fences, symbols, equations, lists)."""
EMBED_WINDOW = 4000
"""Characters, from the end of the prompt, a learned model or semantic route embeds (bounded cost)."""
WORD_WINDOW = 500
"""Characters, from the end of the prompt, read for word cues."""

LENGTH_CAP, CODE_CAP, MATH_CAP, STEPS_CAP = 25, 25, 20, 30

_FENCE_POINTS, _CODE_SYMBOL_MAX = 15, 10
_CODE_SYMBOLS = b"{};<>[]&|"

_EQUATION_POINTS, _MATH_SYMBOL_POINTS = 6, 4
_MATH_WORD_POINTS, _MATH_WORD_MAX = 3, 10
# Each starts with a literal character, which the regex engine finds with a fast scan (an alternation of
# the two would test every position).
_EQUALS = re.compile(r"= ?-?\(?[0-9a-z]")
_POWER = re.compile(r"\^ ?-?\(?[0-9a-z]")
_LATEX = ("\\frac", "\\sum", "\\int", "\\sqrt", "\\lim", "\\cdot", "\\alpha", "\\theta", "\\pi")
_MATH_SYMBOLS = re.compile("[∑∫√≤≥≠∞π∂∆≈±×÷∀∃∈⊂∪∩]")  # noqa: RUF001 (math symbols on purpose)

_STEP_BY_STEP_POINTS, _LIST_POINTS, _SEQUENCE_POINTS = 10, 8, 6
_REASONING_POINTS, _REASONING_MAX = 4, 12
_NUMBERED_ITEM = re.compile(r"\n[ \t]*[0-9]{1,2}[.)][ \t]")


def _with_punctuation(words: Iterable[str]) -> frozenset[str]:
    """Words as `str.split` yields them from prose: bare, or with a bracket or quote before or punctuation
    after."""
    variants = set()
    for word in words:
        for before in ("", "(", '"', "'", "*"):
            for after in ("", ".", ",", ";", ":", "!", "?", ")", '"', "'", "*"):
                variants.add(before + word + after)
    return frozenset(variants)


_MATH_WORD_LIST = (
    "integral", "integrals", "derivative", "derivatives", "equation", "equations", "theorem", "lemma",
    "matrix", "matrices", "eigenvalue", "eigenvalues", "eigenvector", "probability", "polynomial",
    "logarithm", "solve", "calculate", "compute", "proof", "variance", "integrate", "differentiate",
)  # fmt: skip
_REASONING_WORD_LIST = (
    "prove", "proves", "analyze", "analyse", "analysis", "compare", "contrast", "evaluate", "derive",
    "justify", "critique", "optimize", "optimise", "tradeoff", "tradeoffs", "trade-off", "trade-offs",
    "design", "architect", "reason", "reasoning", "why", "pros", "cons",
)  # fmt: skip


class CueWords:
    """The word cues with their punctuated variants (~6,000 strings, ~0.5 MiB): built by `cue_words` the
    first time a prompt is scored, since most configs never score one (no complexity rule, or none a
    request reaches) and every sidecar process would otherwise carry them."""

    __slots__ = ("all", "math", "reasoning", "sequence_first", "sequence_later", "step")

    def __init__(self) -> None:
        self.math = _with_punctuation(_MATH_WORD_LIST)
        self.reasoning = _with_punctuation(_REASONING_WORD_LIST)
        self.step = _with_punctuation(["step", "step-by-step"])
        self.sequence_first = _with_punctuation(["first", "firstly"])
        self.sequence_later = _with_punctuation(
            ["then", "next", "finally", "afterwards", "secondly", "lastly"]
        )
        self.all = self.math | self.reasoning | self.step | self.sequence_first | self.sequence_later
        """Every word cue: a prompt's words are intersected with this once, then the small result is
        classified."""


_cue_words: CueWords | None = None


def cue_words() -> CueWords:
    """The word cues, built on the first call."""
    global _cue_words
    if _cue_words is None:
        _cue_words = CueWords()
    return _cue_words


def score_length(prompt_tokens: int) -> int:
    """5 points per doubling of the token estimate above 32, up to `LENGTH_CAP`."""
    if prompt_tokens <= 32:
        return 0
    return min(LENGTH_CAP, int(5 * math.log2(prompt_tokens / 32)))


def score_code(window: str) -> int:
    """Points for a code fence and for code symbols, which prose hardly uses."""
    points = _FENCE_POINTS if "```" in window else 0
    raw = window.encode("utf-8", "surrogatepass")
    symbols = len(raw) - len(raw.translate(None, _CODE_SYMBOLS))
    return min(CODE_CAP, points + min(_CODE_SYMBOL_MAX, symbols // 2))


def score_math(window: str, cues: frozenset[str]) -> int:
    """Points for an equation, math notation and distinct math words (`window` lower-cased)."""
    caret = "^" in window
    equation = _EQUALS.search(window) is not None or (caret and _POWER.search(window) is not None)
    points = _EQUATION_POINTS if equation else 0
    notation = caret or ("\\" in window and any(command in window for command in _LATEX))
    # Math symbols are outside ASCII: an ASCII prompt (checked in O(1)) cannot contain one.
    if notation or (not window.isascii() and _MATH_SYMBOLS.search(window)):
        points += _MATH_SYMBOL_POINTS
    if cues:
        points += min(_MATH_WORD_MAX, _MATH_WORD_POINTS * len(cues & cue_words().math))
    return min(MATH_CAP, points)


def score_steps(window: str, tail: str, cues: frozenset[str]) -> int:
    """Points for multi-step cues: step-by-step requests, numbered lists, sequencing, reasoning words."""
    points = 0
    # A list's first item may open the window, so the window is read as if it started a line.
    if len(_NUMBERED_ITEM.findall("\n" + window)) >= 2:
        points += _LIST_POINTS
    if not cues:
        return points
    words = cue_words()
    if not cues.isdisjoint(words.step) and ("step by step" in tail or "step-by-step" in tail):
        points += _STEP_BY_STEP_POINTS
    if not cues.isdisjoint(words.sequence_first) and not cues.isdisjoint(words.sequence_later):
        points += _SEQUENCE_POINTS
    points += min(_REASONING_MAX, _REASONING_POINTS * len(cues & words.reasoning))
    return min(STEPS_CAP, points)


def score_complexity(prompt_text: str, prompt_tokens: int) -> int:
    """The 0-100 complexity score of a prompt (weights in the module docstring)."""
    window = prompt_text[-WINDOW:].lower()
    tail = window[-WORD_WINDOW:]
    # Only the cue words of the tail: intersecting with the split list avoids building a set of every word.
    cues = cue_words().all.intersection(tail.split())
    total = (
        score_length(prompt_tokens)
        + score_code(window)
        + score_math(window, cues)
        + score_steps(window, tail, cues)
    )
    return min(100, total)


NOT_SCORED = -1
"""`Decision.complexity` of a request no rule needed the score for."""


class LazyComplexity:
    """A request's complexity scores and semantic route, each computed the first time a rule asks.

    Most rules match on metadata, headers or the data class; scoring every prompt would spend a fifth of
    the decision budget on a number only complexity rules read. The learned scores and the semantic route
    share one embedding of the prompt, computed at most once (`models`: the policy's learned models, None
    when it has none). The Decision reports a score when it was computed and `NOT_SCORED` otherwise."""

    __slots__ = ("_learned", "_models", "_prompt_text", "_prompt_tokens", "_semantic", "_value", "_vector")

    def __init__(self, prompt_text: str, prompt_tokens: int, models: PolicyModels | None = None) -> None:
        self._prompt_text = prompt_text
        self._prompt_tokens = prompt_tokens
        self._value = NOT_SCORED
        self._models = models
        self._vector: Any = None
        self._learned: tuple[str, int] | None = None
        self._semantic: tuple[str, float] | None = None

    @classmethod
    def known(cls, value: int) -> LazyComplexity:
        """A score given in advance (tests, callers that already scored the prompt)."""
        score = cls("", 0)
        score._value = value
        return score

    @property
    def value(self) -> int:
        """The heuristic score, computed now if it was not yet."""
        if self._value == NOT_SCORED:
            self._value = score_complexity(self._prompt_text, self._prompt_tokens)
        return self._value

    def _embedding(self, models: PolicyModels) -> Any:
        if self._vector is None:
            self._vector = models.embed(self._prompt_text[-EMBED_WINDOW:])
        return self._vector

    def learned(self, scorer: str) -> int:
        """The 0-100 score of the learned model `scorer` (the engine checked at load that it exists)."""
        if self._learned is not None and self._learned[0] == scorer:
            return self._learned[1]
        models = self._models
        assert models is not None  # Router refuses a config whose rules name models it was not given
        from .difficulty import text_signals  # loaded with the model; numpy only for learned configs

        text_features, words = text_signals(self._prompt_text)
        gain = models.heads[scorer].gain(self._embedding(models), text_features, words)
        self._learned = (scorer, max(0, min(100, round(100 * gain))))
        return self._learned[1]

    def semantic(self) -> tuple[str, float]:
        """The best semantic route and its similarity."""
        if self._semantic is None:
            models = self._models
            assert models is not None and models.semantic is not None
            self._semantic = models.semantic.best(self._embedding(models))
        return self._semantic

    @property
    def reported(self) -> int:
        """The score if something needed it (the heuristic's before a learned one), else `NOT_SCORED`."""
        if self._value == NOT_SCORED and self._learned is not None:
            return self._learned[1]
        return self._value

    @property
    def scorer(self) -> str:
        """Which scorer `reported` comes from: `heuristic`, a learned model's name, or empty."""
        if self._value != NOT_SCORED:
            return "heuristic"
        return self._learned[0] if self._learned is not None else ""

    @property
    def semantic_reported(self) -> tuple[str, float]:
        """The semantic route and similarity if a rule needed them, else ("", 0.0)."""
        return self._semantic or ("", 0.0)
