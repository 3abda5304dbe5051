"""The learned models of a config, loaded when it loads: the sentence embedding (WordLlama's default
256-d model, whose 16 MB of weights ship inside its wheel), the difficulty heads and the semantic
routes' example vectors.

Nothing here runs for a config whose rules use none of it: `load_models` returns {} without importing
numpy or wordllama, so such a sidecar pays neither memory nor time. When a config does use them, the
embedding model is loaded once per process (from the package's own directory, downloads disabled: a pod
has no network to a model hub), heads are built once per content hash and semantic indexes once per
set of examples, so a config push that changes something else re-embeds nothing.

The per-request embedding is a tokenizer call and a mean over rows of the embedding table: the same
vector as `WordLlama.embed(..., norm=True)`, without its batching and padding (which cost more than
the arithmetic for one prompt).
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from modelroute_contract import DifficultyModel, PolicyConfig, RouterConfig
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


class Embedder:
    """WordLlama's default model, loaded from its wheel."""

    def __init__(self) -> None:
        import numpy as np
        import wordllama

        model = wordllama.WordLlama.load(cache_dir=resources.files(wordllama), disable_download=True)
        self._np = np
        self._table = np.ascontiguousarray(model.embedding, dtype=np.float32)
        self._tokenizer = model.tokenizer
        self._tokenizer.no_padding()
        self._rows = len(self._table)

    def embed(self, text: str) -> Vector:
        """The unit embedding of `text` (zeros for text without tokens)."""
        np = self._np
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            zeros: Vector = np.zeros(self._table.shape[1], dtype=np.float32)
            return zeros
        vector = self._table.take(np.minimum(ids, self._rows - 1), axis=0).mean(axis=0)
        norm = float(np.linalg.norm(vector))
        unit: Vector = vector / norm if norm else vector
        return unit


@cache
def embedder() -> Embedder:
    """The process's embedder, loaded on first use."""
    return Embedder()


def builtin_document() -> dict[str, Any]:
    """The head document of the builtin model, as shipped."""
    text = resources.files("modelroute_sidecar").joinpath("data", _BUILTIN_FILE).read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def builtin_sha256() -> str:
    """sha256 of the packaged builtin head (must be `contract.BUILTIN_DIFFICULTY_SHA256`)."""
    return hashlib.sha256(canonical_json(builtin_document()).encode()).hexdigest()


def _head(model: DifficultyModel) -> DifficultyHead:
    from .engine.difficulty import head_from_document

    with _LOCK:
        cached = _HEADS.get(model.sha256)
    if cached is not None:
        return cached
    if model.head is None:
        # The contract checked version and sha256 against its builtin; this checks the packaged file.
        if builtin_sha256() != model.sha256:
            raise ValueError(
                f"difficulty model {model.name}: the packaged builtin head is not {model.sha256[:12]}"
            )
        document = builtin_document()
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
