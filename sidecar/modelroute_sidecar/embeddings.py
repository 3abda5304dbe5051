"""The learned models of a config, loaded when it loads: the sentence embedding (WordLlama's default
256-d model, whose 16 MB of weights ship inside its wheel), the difficulty heads and the semantic
routes' example vectors.

Nothing here runs for a config whose rules use none of it: `load_models` returns {} without importing
numpy or wordllama, so such a sidecar pays neither memory nor time. When a config does use them, the
embedding model is loaded once per process (from the package's own directory, downloads disabled: a pod
has no network to a model hub), heads are built once per content hash and semantic indexes once per
set of examples, so a config push that changes something else re-embeds nothing.

The per-request embedding is the tokenizer's ids (word by word, cached) and a mean over rows of the
token table: the same vector as `WordLlama.embed(..., norm=True)`, without its batching and padding
(which cost more than the arithmetic for one prompt).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelroute_contract import (
    BUILTIN_DIFFICULTY_HEADS,
    BUILTIN_DIFFICULTY_VERSION,
    DifficultyModel,
    PolicyConfig,
    RouterConfig,
)
from modelroute_contract.schemas import canonical_json

from .engine.learned import PolicyModels, needs_models

if TYPE_CHECKING:
    from .engine.difficulty import DifficultyHead, Vector
    from .engine.semantic import SemanticIndex

_BUILTIN_FILE = "difficulty-builtin.json"

_LOCK = threading.Lock()
_HEADS: dict[str, DifficultyHead] = {}
_SEMANTIC: dict[str, SemanticIndex] = {}
_CACHE_MAX = 16
_WEIGHTS = "l2_supercat_256.safetensors"
_TOKENIZER = "l2_supercat_tokenizer_config.json"
_WIDEN_ROWS = 2048
"""Rows of the float16 token table read and widened at a time when the model loads (1 MiB)."""
_WORD_CACHE_MAX = 50_000
"""Words whose token ids a process keeps (a few MiB at most; cleared when full)."""
_WORD_CACHE_CHARS = 32
"""Longest word (with its leading `▁`s) the cache keeps: prompts repeat short words; a long one is rare,
and a prompt of long unique words must not make the cache hold megabytes."""


class Embedder:
    """WordLlama's default model, read from its wheel's files: the tokenizer and the token table.

    Read directly (safetensors, tokenizers) rather than through `WordLlama.load`, which imports requests
    and the hub client. The float16 table (16 MiB) is widened to float32 once, at load (32 MiB): widening
    the ~250 rows a 2 KiB prompt needs on every request was a third of the embedding's time (a gather
    through a 65,536-entry float32 table: numpy's own float16 cast has no vectorised loop). The parent
    of a multi-worker sidecar loads it for its first config before it forks, so the workers share it.
    `tests/unit/test_learned_sidecar.py` checks the vectors equal `WordLlama.embed(..., norm=True)`."""

    def __init__(self) -> None:
        import numpy as np
        from safetensors import safe_open
        from tokenizers import Tokenizer

        spec = importlib.util.find_spec("wordllama")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("learned routing needs the wordllama package (the sidecar extra)")
        package = Path(spec.submodule_search_locations[0])
        with safe_open(str(package / "weights" / _WEIGHTS), framework="numpy") as weights:
            # Widened a slice at a time: a whole float16 copy beside the float32 table left ~8 MiB more
            # resident after it was freed (the heap does not give all of it back).
            source = weights.get_slice("embedding.weight")
            rows, dims = source.get_shape()
            self._table = np.empty((rows, dims), dtype=np.float32)
            for start in range(0, rows, _WIDEN_ROWS):
                end = min(rows, start + _WIDEN_ROWS)
                self._table[start:end] = source[start:end]
        self._np = np
        self._tokenizer = Tokenizer.from_file(str(package / "tokenizers" / _TOKENIZER))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._bpe = self._tokenizer.model
        self._rows = len(self._table)
        self._words: dict[str, list[int]] = {}
        """A word after one space (`▁word`, nearly every word of a prompt), keyed by the bare word."""
        self._spaced: dict[str, list[int]] = {}
        """A word after a run of spaces (`▁▁word`), keyed by the whole piece."""

    def token_ids(self, text: str) -> list[int]:
        """The tokenizer's ids for `text`, word by word through a bounded cache.

        The tokenizer's normaliser turns each space into `▁` and prepends one, and its BPE never merges a
        `▁` onto the end of a word, so the ids of a text are those of its words, each as `▁word` (a run
        of spaces stays with the word after it: `▁▁▁word`).
        Prompts repeat words, so a cache of words makes a 2 KiB prompt ~10x cheaper than `encode`
        (measured 32 vs 375 µs); `tests/unit/test_learned_sidecar.py` checks the ids are equal. Only
        pieces of at most `_WORD_CACHE_CHARS` characters are kept, at most `_WORD_CACHE_MAX` of them
        (checked on every miss, so one prompt cannot overfill it)."""
        words, spaced, bpe = self._words, self._spaced, self._bpe
        ids: list[int] = []
        if not text:
            return ids
        spaces = 1
        for word in text.split(" "):
            if not word:
                spaces += 1
                continue
            # After one space (nearly every word) the bare word is the key: no `▁` + word string is
            # built and hashed per word, only a miss builds the piece (a 2 KiB prompt: 0.67x the time).
            if spaces == 1:
                found = words.get(word)
                if found is None:
                    found = self._cached(words, word, "\u2581" + word)
            else:
                piece = "\u2581" * spaces + word
                spaces = 1
                found = spaced.get(piece)
                if found is None:
                    found = self._cached(spaced, piece, piece)
            ids.extend(found)
        if spaces > 1:  # trailing spaces
            ids.extend(token.id for token in bpe.tokenize("\u2581" * (spaces - 1)))
        return ids

    def _cached(self, cache: dict[str, list[int]], key: str, piece: str) -> list[int]:
        """The ids of `piece`, kept under `key` when the piece is short; a full cache is emptied first
        (both caches together count against `_WORD_CACHE_MAX`)."""
        found = [token.id for token in self._bpe.tokenize(piece)]
        if len(piece) <= _WORD_CACHE_CHARS:
            if len(self._words) + len(self._spaced) >= _WORD_CACHE_MAX:
                self._words.clear()
                self._spaced.clear()
            cache[key] = found
        return found

    def embed(self, text: str) -> Vector:
        """The unit embedding of `text` (zeros for text without tokens)."""
        np = self._np
        ids = self.token_ids(text)
        if not ids:
            zeros: Vector = np.zeros(self._table.shape[1], dtype=np.float32)
            return zeros
        # The mean of the rows, as a count-weighted sum over the distinct tokens: a prompt repeats its
        # tokens (a 2 KiB prompt of the shared data: ~500 tokens, ~250 distinct), and only the distinct
        # rows are gathered. 557 -> 231 µs for such prompts (bench/decision_bench.py's "learned score" is
        # this plus the head); equal to the mean of the rows within 2e-7.
        # The distinct ids and their counts by hand, as `np.unique(..., return_counts=True)` finds them:
        # its Python-level steps cost more than the sort for ~500 ids (~55 µs of ~240, same vector).
        tokens = np.fromiter(ids, dtype=np.intp, count=len(ids))
        np.minimum(tokens, self._rows - 1, out=tokens)
        tokens.sort()
        first = np.empty(len(tokens), dtype=bool)
        first[0] = True
        np.not_equal(tokens[1:], tokens[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        counts = np.diff(starts, append=len(tokens)).astype(np.float32)
        vector = (counts @ self._table.take(tokens[starts], axis=0)) / np.float32(len(ids))
        norm = float(np.linalg.norm(vector))
        unit: Vector = vector / norm if norm else vector
        return unit


@cache
def embedder() -> Embedder:
    """The process's embedder, loaded on first use."""
    return Embedder()


def builtin_document(version: str = BUILTIN_DIFFICULTY_VERSION) -> dict[str, Any]:
    """The head document of the builtin model of `version` (the latest by default), as shipped: the latest
    is `difficulty-builtin.json`, an older one `difficulty-builtin-<version>.json`."""
    from importlib import resources  # only with learned routing: it imports tempfile and shutil

    if version not in BUILTIN_DIFFICULTY_HEADS:
        raise ValueError(f"no builtin difficulty model of version {version!r}")
    name = _BUILTIN_FILE if version == BUILTIN_DIFFICULTY_VERSION else f"difficulty-builtin-{version}.json"
    text = resources.files("modelroute_sidecar").joinpath("data", name).read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def builtin_sha256(version: str = BUILTIN_DIFFICULTY_VERSION) -> str:
    """sha256 of the packaged builtin head of `version` (must be `contract.BUILTIN_DIFFICULTY_HEADS`')."""
    return hashlib.sha256(canonical_json(builtin_document(version)).encode()).hexdigest()


def _head(model: DifficultyModel) -> DifficultyHead:
    from .engine.difficulty import head_from_document

    with _LOCK:
        cached = _HEADS.get(model.sha256)
    if cached is not None:
        return cached
    if model.head is None:
        # The contract checked version and sha256 against its builtin; this checks the packaged file.
        if model.version not in BUILTIN_DIFFICULTY_HEADS or builtin_sha256(model.version) != model.sha256:
            raise ValueError(
                f"difficulty model {model.name}: the packaged builtin head is not {model.sha256[:12]}"
            )
        document = builtin_document(model.version)
    else:
        document = model.head
    try:
        head = head_from_document(document)
    except ValueError as exc:
        raise ValueError(f"difficulty model {model.name}: {exc}") from None
    with _LOCK:
        if len(_HEADS) >= _CACHE_MAX:
            _HEADS.clear()
        _HEADS[model.sha256] = head
    return head


def _semantic(policy: PolicyConfig, embed: Any) -> SemanticIndex:
    from .engine.semantic import build_semantic_index

    key = canonical_json({"routes": [route.model_dump(mode="json") for route in policy.semantic_routes]})
    with _LOCK:
        cached = _SEMANTIC.get(key)
    if cached is None:
        cached = build_semantic_index(policy.semantic_routes, embed)
        with _LOCK:
            if len(_SEMANTIC) >= _CACHE_MAX:
                _SEMANTIC.clear()
            _SEMANTIC[key] = cached
    return cached


def load_models(config: RouterConfig) -> dict[str, PolicyModels]:
    """By policy name, the learned models of every policy whose rules use them; ValueError naming the
    policy and model when one cannot be loaded."""
    loaded: dict[str, PolicyModels] = {}
    for policy in config.policies:
        if not needs_models(policy):
            continue
        embed = embedder().embed
        loaded[policy.name] = PolicyModels(
            embed=embed,
            heads={model.name: _head(model) for model in policy.difficulty_models},
            semantic=_semantic(policy, embed) if policy.semantic_routes else None,
        )
    return loaded
