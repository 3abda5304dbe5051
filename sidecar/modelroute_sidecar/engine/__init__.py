"""The routing engine: pure functions from a request's features and the local health view to a Decision.

Nothing here does I/O or imports aiohttp, kopf or kubernetes. `extract_features` reads a parsed request
once; `Router(config, local_region)` compiles a RouterConfig into lookup indexes once per config load;
`Router.decide` runs per request.
"""

from .features import extract_features
from .model import (
    Api,
    Choice,
    Decision,
    DecisionError,
    Dropped,
    DropReason,
    HealthView,
    RequestFeatures,
    Role,
)
from .router import Router

__all__ = [
    "Api",
    "Choice",
    "Decision",
    "DecisionError",
    "DropReason",
    "Dropped",
    "HealthView",
    "RequestFeatures",
    "Role",
    "Router",
    "extract_features",
]
