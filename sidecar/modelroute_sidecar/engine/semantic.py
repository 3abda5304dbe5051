"""Semantic routes: which of a policy's routes a prompt means, by cosine similarity to each route's
example utterances.

Built when a config loads (every example embedded once, `build_semantic_index`); per request, one
matrix-vector product against all examples, then the best route: the route of the most similar example
(nearest neighbour, so a route may cover several unlike phrasings). A rule's `semantic` match holds when
its route is that best route and the similarity reaches its `minSimilarity`. Pure numpy: imported only
when a config has semantic routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelroute_contract import SemanticRoute

from .difficulty import Embed, Vector


@dataclass(frozen=True)
class SemanticIndex:
    """Every example's unit vector, stacked, and the route each belongs to."""

    routes: tuple[str, ...]
    examples: npt.NDArray[np.float32]
    route_of: npt.NDArray[np.int32]
    """Index into `routes` of each row of `examples`."""

    def best(self, vector: Vector) -> tuple[str, float]:
        """The best route for a prompt's unit embedding and its similarity."""
        similarities = self.examples @ vector
        row = int(np.argmax(similarities))
        return self.routes[int(self.route_of[row])], float(similarities[row])


def build_semantic_index(routes: Sequence[SemanticRoute], embed: Embed) -> SemanticIndex:
    """Embed every example of `routes` (config load time, never per request)."""
    vectors: list[Vector] = []
    owners: list[int] = []
    for i, route in enumerate(routes):
        for example in route.examples:
            vectors.append(embed(example))
            owners.append(i)
    return SemanticIndex(
        routes=tuple(route.name for route in routes),
        examples=np.stack(vectors).astype(np.float32),
        route_of=np.asarray(owners, dtype=np.int32),
    )
