"""The canary split: which side of a running canary a request belongs to.

The side is a pure function of the canary's name and a stickiness key, so one user stays on one side for
as long as the weight holds, on every sidecar and across restarts, and a user moved to the candidate when
the weight grows stays there (buckets below the weight only ever gain members). The hash is BLAKE2b, not
Python's `hash()`, which is salted per process. The canary name is hashed in so that two canaries do not
put the same users on their candidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from modelroute_contract import CanarySplit

from .model import Dropped, DropReason, RequestFeatures

Side = Literal["stable", "candidate"]

_SCALE = 100.0 / 2**64


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    """A rule's canary, as the engine reads it."""

    name: str
    stable: str
    candidate: str
    candidate_weight: float
    """Percentage (0-100) of the route's requests on the candidate."""
    header: str = ""
    """Stickiness header, lower-cased; empty when none."""
    metadata: str = ""
    """Stickiness metadata key; wins over the header when both are set."""
    _drops: dict[tuple[str, str, Side], Dropped] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def other_side_drop(self, endpoint: str, replica: str, region: str, side: Side) -> Dropped:
        """The record of a replica left out because the request went to `side`: the same few records
        for every request, so each is made once (per Router, as the plan is)."""
        key = (endpoint, replica, side)
        drop = self._drops.get(key)
        if drop is None:
            detail = f"canary {self.name} sent this request to the {side} side"
            drop = self._drops[key] = Dropped(endpoint, replica, region, DropReason.CANARY_OTHER_SIDE, detail)
        return drop

    @classmethod
    def from_config(cls, split: CanarySplit) -> CanaryPlan:
        """Compile a contract canary split."""
        return cls(
            name=split.name,
            stable=split.stable,
            candidate=split.candidate,
            candidate_weight=split.candidate_weight,
            header=split.stickiness_header.lower(),
            metadata=split.stickiness_metadata,
        )


def sticky_bucket(canary: str, key: str) -> float:
    """Where a key falls in [0, 100) for a canary: uniform, stable across processes and machines."""
    digest = hashlib.blake2b(f"{canary}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def stickiness_key(plan: CanaryPlan, features: RequestFeatures) -> str:
    """The value that keeps a user on one side: the stickiness metadata or header value, else the request
    id (every request decided on its own)."""
    value = ""
    if plan.metadata:
        value = features.metadata.get(plan.metadata, "")
    elif plan.header:
        value = features.headers.get(plan.header, "")
    return value or features.request_id


def choose_side(plan: CanaryPlan, features: RequestFeatures) -> Side:
    """The side a request belongs to: the candidate for keys bucketed below the candidate weight."""
    if plan.candidate_weight <= 0:
        return "stable"
    if plan.candidate_weight >= 100:
        return "candidate"
    bucket = sticky_bucket(plan.name, stickiness_key(plan, features))
    return "candidate" if bucket < plan.candidate_weight else "stable"
